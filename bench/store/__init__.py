"""Where measurements live: the SQLite `LatencyStore` (`latency_store`) and the importer of
latency tables measured elsewhere (`importer`).
"""
