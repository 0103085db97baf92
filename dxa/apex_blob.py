"""The results block a Hologic APEX workstation writes into its Secondary Capture (private tag
0019,1000): the demo sends it, and the parser tests build their fixtures with it, so the two can
never drift apart on the layout the parser reads."""

from __future__ import annotations

from collections.abc import Sequence


def apex_blob(
    rows: Sequence[Sequence[str]],
    columns: Sequence[tuple[int, str]],
    *,
    scan_id: str,
    scan: str,
    scan_mode: str,
    protocol: str,
    model: str,
    more_results: Sequence[str] = (),
    more_files: Sequence[str] = (),
) -> str:
    """The blob with a results summary of `rows` under `columns` ((type code, heading) pairs).
    `more_results` lines follow the summary inside Results.js; `more_files` lines follow it."""
    lines = [
        "<HologicHeader1>",
        "<GeneralData>",
        f"<ScanID>{scan_id}</ScanID>",
        "</GeneralData>",
        "</HologicHeader1>",
        '<JavaScriptFile, filetype=2, filename="C:\\QDR\\ScanInfo.js">',
        f'Scan = "{scan}";',
        f'ScanMode = "{scan_mode}";',
        f'AnalProtocol = "{protocol}";',
        f'Model = "{model}";',
        'HologicSoftwareVer = "13.6.0.7";',
        "</JavaScriptFile>",
        '<JavaScriptFile, filetype=3, filename="C:\\QDR\\Results.js">',
        "IncludeTable1 = true;",
        'TableTitle1  = "Results Summary:";',
        "TableType1 = 1;",
        "TableRowTypes1[ 0] = 0;",
    ]
    for c, (code, head) in enumerate(columns):
        lines.append(f"TableColumnTypes1[ {c}] = {code};")
        lines.append(f'ResultsTable1[ 0][ {c}]  = "{head}";')
    for r, row in enumerate(rows, start=1):
        lines.append(f"TableRowTypes1[ {r}] = 1;")
        for c, cell in enumerate(row):
            lines.append(f'ResultsTable1[ {r}][ {c}]  = "{cell}";')
    lines += more_results
    lines.append("</JavaScriptFile>")
    lines += more_files
    return "\r\n".join(lines) + "\r\n"
