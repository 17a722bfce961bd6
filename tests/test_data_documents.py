"""Source documents beyond JSONL: HTML main content with tables, PDF text, folders of mixed files."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import Document

from finloom.data.documents import Reject, html_text, input_records, iter_documents

PAGE = """<html><head><title>Q3 results</title><style>body {color: red}</style>
<script>var tracking = "SCRIPT_NOISE";</script></head>
<body>
<header><div class="logo">ACME HEADER</div><nav><ul><li><a href="/">Home</a></li><li><a href="/about">About us</a></li>
<li><a href="/ir">Investor relations</a></li></ul></nav></header>
<div id="cookie-banner" class="cookie-consent">We use cookies to improve your experience. Accept all cookies.</div>
<main><article>
<h1>Third quarter 2024 results</h1>
<p>ACME Corp reported revenue growth of twelve percent in the third quarter, driven by strong demand for
industrial products in Europe and Asia.</p>
<p>Operating margin expanded to 18.5 percent as the company continued to reduce input costs and improve pricing
across its main segments.</p>
<table><tr><th>Item</th><th>Q3 2024</th><th>Q3 2023</th></tr>
<tr><td>Revenue</td><td>1,234</td><td>1,100</td></tr>
<tr><td>Net income</td><td>210</td><td>180</td></tr></table>
<p>The board declared a quarterly dividend of 0.45 per share, payable next month to shareholders of record.</p>
</article></main>
<footer><p>Copyright 2024 ACME Corp. All rights reserved.</p>
<ul><li><a href="/privacy">Privacy policy</a></li><li><a href="/terms">Terms of use</a></li></ul></footer>
<script>console.log("MORE_SCRIPT")</script>
</body></html>"""


def _pdf_bytes(page_texts: list[str]) -> bytes:
    """A minimal valid PDF (Helvetica text, one line per page) with a correct xref table."""
    pages = len(page_texts)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(pages)) + b"] /Count %d >>" % pages,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(page_texts):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1") if text else b""
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >>"
                       b" /Contents %d 0 R >>" % (5 + 2 * i))
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_html_keeps_main_text_and_table_rows_and_drops_boilerplate():
    text = html_text(PAGE.encode("utf-8"))
    assert "Third quarter 2024 results" in text
    assert "revenue growth of twelve percent" in text and "quarterly dividend of 0.45" in text
    lines = text.splitlines()
    assert "Item | Q3 2024 | Q3 2023" in lines
    assert "Revenue | 1,234 | 1,100" in lines
    assert "Net income | 210 | 180" in lines
    assert not any(set(line) <= set("|- ") for line in lines)  # no Markdown rule rows
    for noise in ("SCRIPT_NOISE", "MORE_SCRIPT", "color: red", "ACME HEADER", "About us", "Investor relations",
                  "cookies", "Copyright", "Privacy policy", "Terms of use"):
        assert noise not in text, noise


def test_html_detects_encoding_and_rejects_empty_pages(tmp_path):
    chinese = "公司第三季度营业收入同比增长百分之十二，净利润继续改善。" * 3
    page = f'<html><head><meta charset="gbk"></head><body><p>{chinese}</p></body></html>'
    (tmp_path / "cn.html").write_bytes(page.encode("gbk"))
    (tmp_path / "empty.htm").write_text("<html><head><script>x()</script></head><body></body></html>")
    results = list(iter_documents(tmp_path, lang="zh"))
    assert [type(r) for r in results] == [Document, Reject]
    assert results[0].text == chinese and results[0].metadata["lang"] == "zh"
    assert results[1] == Reject(str(tmp_path / "empty.htm"), 0, "html_no_text")


def test_pdf_pages_are_joined_with_newlines(tmp_path):
    (tmp_path / "report.pdf").write_bytes(_pdf_bytes(["Revenue rose 12 percent", "", "Dividend of 0.45 declared"]))
    [doc] = iter_documents(tmp_path / "report.pdf", domain_hint="finance")
    assert doc.text == "Revenue rose 12 percent\nDividend of 0.45 declared"
    assert "\f" not in doc.text
    assert doc.id == "report.pdf"
    assert doc.metadata == {"source": "report.pdf", "file": "report.pdf", "format": "pdf", "domain_hint": "finance",
                            "lang": None, "pages": 3}


def test_pdf_without_text_or_unreadable_is_rejected_with_reason(tmp_path):
    from pypdf import PdfReader, PdfWriter

    (tmp_path / "a_scanned.pdf").write_bytes(_pdf_bytes(["", ""]))
    (tmp_path / "b_broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf\n")
    writer = PdfWriter()
    for page in PdfReader(_write(tmp_path / "plain.bin", _pdf_bytes(["Secret numbers"]))).pages:
        writer.add_page(page)
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    with open(tmp_path / "c_locked.pdf", "wb") as handle:
        writer.write(handle)
    (tmp_path / "plain.bin").unlink()
    rejects = list(iter_documents(tmp_path))
    assert all(isinstance(r, Reject) for r in rejects)
    assert [(r.file.split("/")[-1], r.reason.split(":")[0]) for r in rejects] == [
        ("a_scanned.pdf", "pdf_no_text"), ("b_broken.pdf", "pdf_unreadable"), ("c_locked.pdf", "pdf_unreadable")]
    assert rejects[2].reason == "pdf_unreadable: encrypted"
    assert len(rejects[1].reason) > len("pdf_unreadable: ")


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_folder_walk_order_metadata_and_counts_add_up(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "deep").mkdir()
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"id": "r1", "text": "first record", "lang": "en"}) + "\n\n"
        + "{broken json\n"
        + json.dumps({"text": 42}) + "\n"
        + json.dumps({"text": "fourth record"}) + "\n",
        encoding="utf-8",
    )
    pq.write_table(pa.table({"text": ["row one", "", "row three"]}), tmp_path / "b" / "rows.parquet")
    (tmp_path / "b" / "deep" / "notes.md").write_text("# Notes\nPlain markdown.", encoding="utf-8")
    (tmp_path / "b" / "page.html").write_text(PAGE, encoding="utf-8")
    (tmp_path / "c.pdf").write_bytes(_pdf_bytes(["Annual report text"]))
    (tmp_path / "d.docx").write_bytes(b"PK\x03\x04 not supported")
    (tmp_path / "e.txt").write_bytes(b"caf\xe9 latin-1")
    (tmp_path / "README").write_text("no extension", encoding="utf-8")

    results = list(iter_documents(tmp_path, domain_hint="finance", lang="zh"))
    documents = [r for r in results if isinstance(r, Document)]
    rejects = [r for r in results if isinstance(r, Reject)]
    # a.jsonl: 4 non-blank lines; rows.parquet: 3 rows; 6 single-document files.
    assert input_records(tmp_path) == 4 + 3 + 6 == len(results) == len(documents) + len(rejects)
    assert [(d.metadata["source"], d.metadata["format"]) for d in documents] == [
        ("a.jsonl", "jsonl"), ("a.jsonl", "jsonl"),
        ("b/deep/notes.md", "text"), ("b/page.html", "html"),
        ("b/rows.parquet", "parquet"), ("b/rows.parquet", "parquet"),
        ("c.pdf", "pdf"),
    ]
    assert [d.id for d in documents] == ["r1", "a.jsonl:5", "b/deep/notes.md", "b/page.html",
                                         "b/rows.parquet:1", "b/rows.parquet:3", "c.pdf"]
    assert [d.text for d in documents][:3] == ["first record", "fourth record", "# Notes\nPlain markdown."]
    assert "Revenue | 1,234 | 1,100" in documents[3].text
    assert all(d.metadata["domain_hint"] == "finance" for d in documents)
    assert [d.metadata["lang"] for d in documents][:3] == ["en", "zh", "zh"]  # a record's own lang wins
    assert [(r.file.removeprefix(str(tmp_path) + "/"), r.line, r.reason.split(":")[0]) for r in rejects] == [
        ("README", 0, "unsupported_format"),
        ("a.jsonl", 3, "bad JSON"),
        ("a.jsonl", 4, "text is not a string"),
        ("b/rows.parquet", 2, "missing or empty field(s)"),
        ("d.docx", 0, "unsupported_format"),
        ("e.txt", 0, "not UTF-8"),
    ]
    assert rejects[4].reason == "unsupported_format: .docx"
    assert rejects[0].reason == "unsupported_format: (no extension)"
    assert rejects[0].as_dict() == {"file": str(tmp_path / "README"), "line": 0, "reason": rejects[0].reason}


def test_forced_format_and_single_file(tmp_path):
    (tmp_path / "filing.log").write_text("plain text filing", encoding="utf-8")
    [doc] = iter_documents(tmp_path / "filing.log", fmt="text")
    assert (doc.text, doc.metadata["source"], doc.metadata["format"]) == ("plain text filing", "filing.log", "text")
    [reject] = iter_documents(tmp_path / "filing.log")
    assert reject.reason == "unsupported_format: .log"
    assert input_records(tmp_path / "filing.log") == 1


def test_corrupt_parquet_is_one_reject(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"PAR1 definitely not parquet")
    [reject] = iter_documents(tmp_path)
    assert reject.reason.startswith("parquet_unreadable: ")
    assert input_records(tmp_path) == 1
