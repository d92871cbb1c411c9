"""Where measurements live: the SQLite `LatencyStore` (`latency_store`), the `AccuracyStore`
of fine-tune results (`accuracy_store`), the guarded SQLite file both are (`sqlite_file`),
and the importer of latency tables measured elsewhere (`importer`).
"""
