"""Command handlers, one module per group. Each module's `register(sub)` adds its parsers."""
