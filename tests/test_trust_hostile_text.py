"""Untrusted text stays text, in every output format.

Task names, queue names, message headers (argsrepr) and plugin strings come from whoever can write to the
broker or install a plugin. Whatever they hold (terminal escape sequences, OSC title/clipboard writes, C1
controls, carriage returns, newlines that forge a `fix:` line, bidi overrides, zero-width characters, rich
markup, HTML, markdown), the reports must:

- text, markdown, trace text/markdown, `checks`, `explain`: carry no control, bidi or zero-width character
  (they are shown escaped: `\\x1b`, `\\u202e`), keep every value on its line (no forged `fix:` line), show
  rich markup literally, and (markdown) render no HTML and no markdown structure from a value;
- json, sarif, trace json: stay valid JSON, ASCII only (a `cat report.json` is safe), with the exact values.

Real Redis (db 10, uniquely named queues deleted at the end); a real plugin for every field of a finding.
"""
from __future__ import annotations

import html
import json
import re
import textwrap
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_doctor.model import Category, Confidence, Finding, Impact, Location, RankedFinding, Report, Target
from celery_doctor.safe_text import md_code, md_text, printable, printable_block, sanitized
from tests.test_trust_messages import canonical
from tests.test_trust_support import cli, redis_available, redis_client, uid

DB = 10

CONTROLS = "c\x1b[2J\x1b[31mred\x1b]0;pwned\x07\x1b]52;c;ZXZpbA==\x07\x9b31m\x85\x7f\x00\rover\tt"
FORGE = "f\n   fix: FORGED-FIX run this\r\n   fix: FORGED-CR"
BIDI = "invoice\u202efdp.exe\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069\u061c\u200e\u200f"
INVISIBLE = "zero\u200bwidth\u200c\u200d\u2060\ufeff\u00ad\u2028\u2029\U000e0041"
MARKUP = "[bold red]x[/] [link=http://evil.example]click[/link] [/]"
HTML = "<script>alert(1)</script><img src=x onerror=alert(2)>&amp;"
MARKDOWN = "tick`br``eak`|p|i|p|e| *em* _u_ [a](http://evil.example) ![i](http://evil.example/i.png) ~~s~~ $x$"
HOSTILE = {"controls": CONTROLS, "forge": FORGE, "bidi": BIDI, "invisible": INVISIBLE, "markup": MARKUP,
           "html": HTML, "markdown": MARKDOWN}

UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def unsafe_chars(text: str, allow_newlines: bool = True) -> list[str]:
    return sorted({repr(ch) for ch in text
                   if unicodedata.category(ch) in UNSAFE_CATEGORIES and not (allow_newlines and ch == "\n")})


def assert_terminal_safe(text: str, what: str) -> None:
    bad = unsafe_chars(text)
    assert not bad, f"{what}: raw control/bidi/format characters {bad} reached the output"


def assert_no_forged_line(text: str, what: str) -> None:
    """No line starts like a field of the report (`   fix:`, `- **Fix:**`) with a value's text.

    A text line too long for the terminal continues 5 columns in, deeper than any field (indent 3): such a
    continuation is visibly part of the line above, so only indents up to 4 are looked at."""
    forged = [line for line in text.splitlines()
              if re.match(r" {0,4}(?:[-*+] )?(?:\*\*)?fix:?(?:\*\*)?:? *FORGED", line, re.I)]
    assert not forged, f"{what}: a value broke out of its line: {forged}"


def unwrapped(text: str) -> str:
    """The text report with its continuation lines joined back (spaces at a break may be lost)."""
    return re.sub(r"\n {5,}", "", text)


def assert_ascii_json(text: str, what: str):
    assert all(ch == "\n" or " " <= ch <= "~" for ch in text), \
        f"{what}: JSON output holds raw non-ASCII or control characters {unsafe_chars(text)[:5]}"
    return json.loads(text)


def markdown_html(text: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").enable("strikethrough").render(text)


def assert_inert_markdown(text: str, what: str) -> str:
    """No HTML from a value survives rendering, and no value adds links or images."""
    rendered = markdown_html(text)
    for tag in ("<script", "<img", "<a ", "<del"):
        assert tag not in rendered, f"{what}: a value rendered as live {tag}...>:\n{rendered[:3000]}"
    return rendered


def strings_in(document) -> list[str]:
    if isinstance(document, str):
        return [document]
    if isinstance(document, dict):
        return [s for k, v in document.items() for s in strings_in(k) + strings_in(v)]
    if isinstance(document, list):
        return [s for item in document for s in strings_in(item)]
    return []


# ------------------------------------------------------------------------------------ the sanitiser

@pytest.mark.parametrize("raw, shown", [
    ("\x1b[2J", "\\x1b[2J"), ("a\rb", "a\\rb"), ("a\nb", "a\\nb"), ("a\tb", "a\\tb"), ("\x07\x00\x7f", "\\x07\\x00\\x7f"),
    ("\x9b\x85", "\\x9b\\x85"), ("\u202e", "\\u202e"), ("\u2066x\u2069", "\\u2066x\\u2069"), ("\u200b\ufeff", "\\u200b\\ufeff"),
    ("\u2028\u2029", "\\u2028\\u2029"), ("\u00ad", "\\xad"), ("\U000e0041", "\\U000e0041"), ("\ud800", "\\ud800"),
])
def test_printable_escapes_controls_bidi_and_invisible_characters(raw, shown):
    assert printable(raw) == shown


@pytest.mark.parametrize("text", ["proj.tasks.add", "queue:celery", "café 日本語 🙂 ünïcödé", "[bold]x[/]",
                                  "<b>&amp;</b>", "back\\slash", "a b", "ναι", "\u00a0nbsp"])
def test_printable_leaves_ordinary_text_alone(text):
    assert printable(text) == text


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60))
def test_printable_output_is_always_one_safe_line(text):
    shown = printable(text)
    assert not unsafe_chars(shown, allow_newlines=False)
    assert "\n" not in shown and "\r" not in shown
    assert (shown == text) == (not unsafe_chars(text, allow_newlines=False))
    block = printable_block(text)
    assert not unsafe_chars(block) and block.count("\n") == text.count("\n")


def _report(value: str) -> Report:
    finding = Finding(check="CD206", title="t " + value, category=Category.ROUTING, impact=Impact.HIGH,
                      confidence=Confidence.OBSERVED, subject="queue:" + value, evidence=("e " + value, value),
                      fix="fix " + value, messages_at_risk=3, location=Location("p" + value + ".py", 4), slug="s" + value)
    return Report(tool_version="0", target=Target(app=value, broker="redis://h/0" + value, transport="redis"),
                  mode="scan", started_at="now", duration_s=0.5,
                  findings=(RankedFinding(rank=1, score=60.0, why="why " + value, finding=finding),),
                  checks=(), not_checked=(("redis" + value, "reason " + value),))


def test_sanitized_reaches_every_string_of_a_report_and_keeps_the_rest():
    value = CONTROLS + FORGE + BIDI + INVISIBLE
    report = _report(value)
    clean = sanitized(report)
    for text in strings_in(json.loads(json.dumps(clean, default=lambda o: getattr(o, "__dict__", str(o))))):
        assert not unsafe_chars(text, allow_newlines=False), text
    f = clean.findings[0].finding
    assert f.impact is Impact.HIGH and f.confidence is Confidence.OBSERVED and f.category is Category.ROUTING
    assert f.messages_at_risk == 3 and f.location.line == 4 and clean.findings[0].score == 60.0
    assert f.subject == "queue:" + printable(value) and f.evidence[1] == printable(value)
    assert clean.not_checked == (("redis" + printable(value), "reason " + printable(value)),)
    assert report.findings[0].finding.subject == "queue:" + value  # the original is not touched


@pytest.mark.parametrize("value", [*HOSTILE.values(), "# heading", "- item", "+ item", "1. item", "2) item", "=====",
                                   "> quote", "a\\*b", "&lt;", "`", "``x``", "x\\|y", "x\\", "__init__", "a_b_c"])
def test_md_text_renders_as_exactly_the_printable_value(value):
    rendered = markdown_html(f"- **k:** {md_text(value)}\n- {md_text(value)}\n")
    assert_inert_markdown(f"- **k:** {md_text(value)}\n- {md_text(value)}\n", value)
    items = re.findall(r"<li>(.*?)</li>", rendered, re.S)
    assert len(items) == 2, rendered
    assert html.unescape(items[0]) == "<strong>k:</strong> " + printable(value)
    assert html.unescape(items[1]) == printable(value), rendered


@pytest.mark.parametrize("value", [*HOSTILE.values(), "`", "``", "a`b``c```d", " x ", " ` ", "|", "x\\|y", "", "plain"])
def test_md_code_is_a_code_span_that_nothing_inside_can_close(value):
    rendered = markdown_html(f"see {md_code(value)} here\n")
    code = re.findall(r"<code>(.*?)</code>", rendered, re.S)
    assert len(code) == 1, rendered
    assert html.unescape(code[0]) == (printable(value) or " "), rendered
    table = markdown_html(f"| a | b |\n|---|---|\n| {md_code(value, table=True)} | {md_text(value)} |\n")
    cells = re.findall(r"<td>(.*?)</td>", table, re.S)
    assert len(cells) == 2, table
    assert html.unescape(re.sub(r"</?code>", "", cells[0])) == (printable(value) or " ")
    assert html.unescape(cells[1]) == printable(value).strip()  # a cell's text is trimmed


def test_every_reporter_renders_a_hostile_report_safely():
    from celery_doctor.reporters.json import format_json
    from celery_doctor.reporters.markdown import format_markdown
    from celery_doctor.reporters.sarif import format_sarif
    from celery_doctor.reporters.text import format_text

    value = "".join(HOSTILE.values())
    report = _report(value)
    for color in (False, True):
        text = format_text(report, color=color, width=100)
        if color:
            text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # the reporter's own colours
        assert_terminal_safe(text, f"text color={color}")
        assert_no_forged_line(text, "text")
        assert "red]x[/]" in unwrapped(text) and "\\x1b]52;c;ZXZpbA==\\x07" in unwrapped(text)
    markdown = format_markdown(report)
    assert_terminal_safe(markdown, "markdown")
    assert_no_forged_line(markdown, "markdown")
    assert_inert_markdown(markdown, "markdown")
    for name, out in (("json", format_json(report)), ("sarif", format_sarif(report))):
        document = assert_ascii_json(out, name)
        assert any(value in s for s in strings_in(document)), f"{name} lost the exact value"


# ------------------------------------------------------------------------------ real Redis, real CLI

@pytest.fixture(scope="module")
def hostile_broker():
    if not redis_available():
        pytest.skip("no Redis on 127.0.0.1:6379")
    r = redis_client(DB)
    tag = uid()
    # two queues of hostile task names (a check names up to 6 tasks per queue), one hostile queue name
    queues = [f"trust-hostile-text-{tag}-a", f"trust-hostile-text-{tag}-b"]
    hostile_queue = f"trust-hostile-q-{tag}-" + CONTROLS + FORGE + BIDI
    ids = {}
    for i, (name, value) in enumerate(HOSTILE.items()):
        ids[name] = f"hostile-{name}-{tag}"
        for copy in range(3):  # duplicates: CD212 shows the call (task name and argsrepr)
            r.lpush(queues[i % 2], canonical(task=f"{name}.{value}", task_id=ids[name] if copy == 0 else None,
                                             argsrepr=f"({value})", origin=f"gen{value}@host"))
    r.lpush(hostile_queue, canonical(task="plain.task"))
    try:
        yield dict(url=f"redis://127.0.0.1:6379/{DB}", queues=queues, hostile_queue=hostile_queue, ids=ids, tag=tag)
    finally:
        r.delete(*queues, hostile_queue)
        assert not list(r.scan_iter(match=f"*{tag}*", count=1000))


def _scan(broker, fmt, tmp_path):
    return cli("scan", "--broker", broker["url"], "--format", fmt, "--timeout", "8", "--max-messages", "100000",
               cwd=tmp_path)


@pytest.mark.redis
def test_scan_of_hostile_task_and_queue_names_text(hostile_broker, tmp_path):
    run = _scan(hostile_broker, "text", tmp_path)
    assert run.code in (0, 1) and not run.crash_logs, str(run)
    assert_terminal_safe(run.stdout + run.stderr, "scan --format text")
    assert_no_forged_line(run.stdout, "scan --format text")
    out = run.stdout
    assert all(q in unwrapped(out) for q in hostile_broker["queues"]), "the scan did not read the hostile queues"
    # every value is there, escaped and literal (rich did not eat the markup)
    for shown in ("\\x1b[2J", "\\x1b]52;c;ZXZpbA==\\x07", "\\x9b31m", "\\rover", "invoice\\u202efdp.exe",
                  "zero\\u200bwidth", "f\\n", "FORGED-FIX", "red]x[/]", "<script>alert(1)</script><img",
                  "trust-hostile-q-"):
        assert shown in unwrapped(out), f"{shown!r} missing from the text report:\n{out[:4000]}"
    # genuine fix lines sit at the detail indent; nothing else does
    fix_lines = [line for line in out.splitlines() if re.match(r" {0,4}fix:", line)]
    assert fix_lines and all(line.startswith("   fix: ") and "FORGED" not in line for line in fix_lines), fix_lines


@pytest.mark.redis
def test_scan_of_hostile_task_and_queue_names_markdown(hostile_broker, tmp_path):
    run = _scan(hostile_broker, "markdown", tmp_path)
    assert run.code in (0, 1) and not run.crash_logs, str(run)
    out = run.stdout
    assert_terminal_safe(out, "scan --format markdown")
    assert_no_forged_line(out, "scan --format markdown")
    assert "<script" not in out and "<img" not in out
    rendered = assert_inert_markdown(out, "scan --format markdown")
    text = html.unescape(re.sub(r"<[^>]+>", "", rendered))
    for shown in ("<script>alert(1)</script>", "[bold red]x[/]", "tick`br``eak`|p|i|p|e| *em* _u_", "invoice\\u202efdp.exe"):
        assert shown in text, f"{shown!r} does not read literally in the rendered markdown"
    # the table has exactly its seven columns in every row, whatever the subjects hold
    rows = [line for line in out.splitlines() if line.startswith("| ") and line[2:3].isdigit()]
    assert rows and all(len(re.findall(r"(?<!\\)\|", row)) == 8 for row in rows), rows
    fixes = [line for line in out.splitlines() if "**Fix:**" in line]
    assert len(fixes) == len(rows) and all(line.startswith("- **Fix:** ") for line in fixes)


@pytest.mark.redis
@pytest.mark.parametrize("fmt", ["json", "sarif"])
def test_scan_of_hostile_names_json_and_sarif_keep_exact_values_ascii_only(hostile_broker, tmp_path, fmt):
    run = _scan(hostile_broker, fmt, tmp_path)
    assert run.code in (0, 1) and not run.crash_logs, str(run)
    document = assert_ascii_json(run.stdout, f"scan --format {fmt}")
    strings = "\n".join(strings_in(document))
    for name, value in HOSTILE.items():
        assert f"{name}.{value}" in strings, f"{fmt}: the exact task name {name!r} is not in the report"
    assert hostile_broker["hostile_queue"] in strings
    if fmt == "sarif":
        assert document["version"] == "2.1.0" and document["runs"][0]["results"]


@pytest.mark.redis
def test_trace_of_a_hostile_task_in_every_format(hostile_broker, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    task_id = hostile_broker["ids"]["forge"]
    files = [out / "t.txt", out / "t.md", out / "t.json"]
    run = cli("trace", task_id, "--broker", hostile_broker["url"], "--timeout", "8", cwd=tmp_path, outputs=files)
    assert run.code == 0 and not run.crash_logs, str(run)
    text, markdown, document = (run.files[str(p)] for p in files)
    for what, body in (("trace text", text), ("trace markdown", markdown)):
        assert_terminal_safe(body, what)
        assert_no_forged_line(body, what)
    assert "forge.f\\n   fix: FORGED-FIX" in text, text
    assert_inert_markdown(markdown, "trace markdown")
    data = assert_ascii_json(document, "trace json")
    assert data["locations"][0]["task"] == f"forge.{FORGE}"
    stdout = cli("trace", hostile_broker["ids"]["controls"], "--broker", hostile_broker["url"], "--timeout", "8",
                 cwd=tmp_path)
    assert stdout.code == 0, str(stdout)
    assert_terminal_safe(stdout.stdout, "trace to stdout")
    assert "controls.c\\x1b[2J" in stdout.stdout


# ------------------------------------------------------------------- a plugin: every field of a finding

HOSTILE_ALL = "".join(HOSTILE.values())
PLUGIN_FILES = {
    "hostile_plugin.py": f'''
        from celery_doctor.model import Category, Confidence, Location, Runbook, check

        H = {HOSTILE_ALL!r}

        @check(id="HOST001", slug="hostile-" + H, title="Hostile " + H, category=Category.TASK_CODE,
               needs=("config",), runbook=Runbook(symptom="s" + H, why="w" + H, confirm="c" + H, fix="f" + H,
                                                  risk="r" + H))
        def hostile(snapshot):
            yield hostile.finding("subject " + H, ["evidence " + H, H], "fix " + H, title="title " + H,
                                  confidence=Confidence.OBSERVED, messages_at_risk=7,
                                  location=Location("path" + H + ".py", 3))

        CHECKS = [hostile]
    ''',
    "hostile_broken_plugin.py": f'''
        raise ImportError({("broken " + HOSTILE_ALL)!r})
    ''',
    "trust_hostile-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: trust-hostile\nVersion: 1.0\n",
    "trust_hostile-1.0.dist-info/entry_points.txt": '''
        [celery_doctor.checks]
        hostile = hostile_plugin:CHECKS
        broken = hostile_broken_plugin:CHECKS
    ''',
}


@pytest.fixture(scope="module")
def hostile_plugin(tmp_path_factory) -> dict:
    directory = tmp_path_factory.mktemp("hostile-plugin")
    for name, text in PLUGIN_FILES.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return {"PYTHONPATH": str(directory)}


def _lint(env, fmt, cwd: Path):
    return cli("lint", "--broker", f"redis://127.0.0.1:6379/{DB}", "--select", "HOST", "--format", fmt,
               "--fail-on", "never", cwd=cwd, env=env)


@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_every_field_of_a_plugin_finding_is_untrusted_text_and_markdown(hostile_plugin, tmp_path, fmt):
    run = _lint(hostile_plugin, fmt, tmp_path)
    assert run.code == 0 and not run.crash_logs and not run.stderr.strip(), str(run)
    assert "HOST001" in run.stdout and "ImportError: broken" in unwrapped(run.stdout), "the plugins did not run"
    assert_terminal_safe(run.stdout, f"lint --format {fmt}")
    assert_no_forged_line(run.stdout, f"lint --format {fmt}")
    if fmt == "text":
        assert "[bold red]x[/]" in run.stdout and "hostile-c\\x1b[2J" in run.stdout  # the slug, in the table too
    else:
        assert_inert_markdown(run.stdout, "lint --format markdown")


@pytest.mark.parametrize("fmt", ["json", "sarif"])
def test_every_field_of_a_plugin_finding_is_exact_in_json_and_sarif(hostile_plugin, tmp_path, fmt):
    run = _lint(hostile_plugin, fmt, tmp_path)
    assert run.code == 0 and not run.crash_logs, str(run)
    document = assert_ascii_json(run.stdout, f"lint --format {fmt}")
    strings = strings_in(document)
    for prefix in ("subject ", "evidence ", "fix ", "path"):
        assert any(s.startswith(prefix + HOSTILE_ALL) or (prefix + HOSTILE_ALL) in s for s in strings), prefix


def test_checks_and_explain_show_plugin_strings_as_text(hostile_plugin, tmp_path):
    listing = cli("checks", cwd=tmp_path, env=hostile_plugin)
    listing_json = cli("checks", "--format", "json", cwd=tmp_path, env=hostile_plugin)
    explained = cli("explain", "HOST001", cwd=tmp_path, env=hostile_plugin)
    for run in (listing, listing_json, explained):
        assert run.code == 0 and not run.crash_logs, str(run)
        assert_terminal_safe(run.stdout + run.stderr, " ".join(run.args))
    assert_no_forged_line(listing.stdout, "checks")
    assert explained.stdout.startswith("# HOST001 hostile-c\\x1b[2J") and "\n" not in explained.stdout.split("\n\n")[0]
    assert "HOST001  hostile-c\\x1b[2J" in listing.stdout and "failed to load: ImportError: broken" in listing.stdout
    for line in listing.stdout.splitlines():  # each plugin string stayed on its own line
        assert "FORGED" not in line or line.startswith("HOST001") or "failed to load" in line, line
    data = assert_ascii_json(listing_json.stdout, "checks --format json")
    assert {"HOST001"} <= {c["id"] for c in data} and any(c.get("slug") == "hostile-" + HOSTILE_ALL for c in data)
    assert "\\x1b]52;c;ZXZpbA==\\x07" in explained.stdout and "## " in explained.stdout


def test_a_hostile_usage_error_is_one_safe_line(tmp_path):
    for args in (("explain", "CD\x1b]0;pwned\x07\u202e\n   fix: FORGED"),
                 ("lint", "--broker", f"redis://127.0.0.1:6379/{DB}", "--source", "/nowhere\x1b]0;pwned\x07\u202e")):
        run = cli(*args, cwd=tmp_path)
        assert run.code == 2 and len(run.stderr.strip().splitlines()) == 1, str(run)
        assert_terminal_safe(run.stderr, "usage error")
        assert "pwned" in run.stderr
