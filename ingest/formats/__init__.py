"""Per-format parsers behind `ingest.parse.parse_file`. Each module turns the bytes of one
kind of file into a `ParsedDocument` through `DocBuilder`, which owns text offsets and cleaning."""
