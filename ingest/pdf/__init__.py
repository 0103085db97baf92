"""DXA PDF reports (Hologic, GE enCORE, Norland, OsteoSys PRIMUS…): declarative layout templates
applied by one engine over a fast pypdfium2 text pass."""

from ingest.pdf.parse import parse_pdf

__all__ = ["parse_pdf"]
