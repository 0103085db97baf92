"""Reading scanned, faxed and photographed reports (issue 14): page images are made upright and
straight (`ingest.ocr.images`), read by Tesseract (`ingest.ocr.tesseract`), fed as text lines to the
same layout templates as text PDFs (`ingest.ocr.read`), and checked against the redundancy of a
DXA results table (`ingest.ocr.checks`). The outcome is never stored as results directly: it is a
`ScanReading` that a person confirms (`services.scans`)."""
