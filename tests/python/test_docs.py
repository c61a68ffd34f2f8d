# tests/python/test_docs.py - every code block of README.md and docs/*.md runs, and does what its page says.
"""The documentation's code blocks, executed.

One test per page (README.md and every docs/*.md, found by glob, so a new page is covered by
itself). A page's blocks run in order, like a notebook, in one namespace: a later block may use
the names an earlier one made. A failure names the page and the line of the block.

Blocks by language:

- ``python``: compiled with top-level ``await`` allowed and run on one event loop kept for the
  whole page, so a database opened in one block is usable in the next; a block that calls
  ``asyncio.run(main())`` runs its own loop (any other runs inside the page's loop, as code in a
  coroutine would). Its printed output is kept in ``harness.out``.
- ``c``: a whole program (it has ``main``) is compiled against the built libkeel (include/ and
  build/c/libkeel.a) with -Wall -Wextra -Werror and run; a fragment needs a hidden template
  (below). Without build/c the C blocks are skipped locally, and fail when KEEL_DOCS_C=1 (set by
  make test).
- ``sh`` and ``console``: run by bash (a ``console`` block's ``$ `` lines are the commands; the
  lines after them are the output the page shows, checked by a hidden check where it matters),
  with build/c first on PATH; output in ``harness.out``.
- ``json``: parsed; ``yaml``: written to ``harness.tmp / "keel.yaml"`` and loaded as a keel
  configuration (validated, nothing connects). Untagged and ``text`` blocks are text, not run.

Hidden directives are HTML comments, invisible when the page is rendered:

- ``<!-- test: skip: REASON -->`` just before a block: not run. The reason is required, and says
  what covers the block instead.
- ``<!-- test-setup`` ... ``-->`` just before a block: Python run first, in the page's namespace
  (make a table a fragment reads, define a name the fragment leaves to the reader).
- ``<!-- test-check`` ... ``-->`` just after a block: Python run after it, asserting what the
  text claims.
- ``<!-- test-c`` ... ``-->`` just before a C fragment: a whole program with ``{definitions}``
  (where the fragment's #include lines and top-level functions go) and ``{statements}`` (inside
  main, where the rest goes).
- ``<!-- test-cleanup`` ... ``-->`` anywhere: Python run when the page ends, passed or not
  (drop what the page made in the test servers).

Hidden code runs like a python block (top-level ``await`` on the page's loop) and sees the
page's names and ``harness``, the test's helpers (class Harness): ``pg_url`` / ``mysql_url`` /
``mongo_url``, ``tmp`` (the working directory, with links to the repository's build/, examples/
and include/), ``out`` / ``err`` / ``outputs`` / ``shown`` (what the last block printed, and what
a console block shows), ``block`` and ``source`` (its text, URLs substituted); for the next
block ``subst`` (text replacements, e.g. a port), ``env``, ``expect_status`` (its exit status)
and ``expect_raises`` (an exception it must raise); ``start()`` (a background server, stopped
with the page), ``free_port()``, ``table()`` (the rows of a ``keel check`` table) and ``await
harness.rerun(subst=…, db=…)`` (the block again, with its text or names changed).

Every relative link of a page must lead to a file that exists and, with an #anchor, to a
heading of that page (test_links_lead_to_files_and_headings_that_exist).

Servers: the pages use the documented test URLs (postgresql://postgres@127.0.0.1:5432/keel_test,
mysql://root@127.0.0.1:3306/keel_test, mongodb://127.0.0.1:27017/keel_test, and the PostgreSQL one
without the port); the test replaces them in every block with the suite's KEEL_TEST_PG_URL,
KEEL_TEST_MYSQL_URL and KEEL_TEST_MONGO_URL, so a run uses the databases the suite is given. Each
page runs with a fresh temporary directory as working directory (SQLite files land there) and
with no KEEL_ configuration variables set.
"""
import ast
import asyncio
import contextlib
import io
import json
import os
import pathlib
import re
import shlex
import socket
import subprocess
import sys
import textwrap

import pytest

import keel
from conftest import MONGO_URL, MYSQL_URL, PG_URL

REPO = pathlib.Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
BUILD_C = REPO / "build" / "c"

# The URLs the pages show, and the suite's URL each one stands for.
DOC_URLS = {
    "postgresql://postgres@127.0.0.1:5432/keel_test": PG_URL,
    "postgresql://postgres@127.0.0.1/keel_test": PG_URL,
    "mysql://root@127.0.0.1:3306/keel_test": MYSQL_URL,
    "mongodb://127.0.0.1:27017/keel_test": MONGO_URL,
}
_DOC_URL_RE = re.compile("|".join(re.escape(u) for u in sorted(DOC_URLS, key=len, reverse=True))
                         + r"(?![\w/-])")

# Environment variables a sanitizer run of the suite sets, which compilers and the programs the
# pages build must not inherit (they are not instrumented; LeakSanitizer would report gcc).
_SANITIZER_VARS = ("LD_PRELOAD", "ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC")

_FENCE = re.compile(r"^( *)(`{3,})([\w+-]*)\s*$")
_DIRECTIVE = re.compile(r"^( *)<!-- test((?:-setup|-check|-cleanup|-c)(?=\s|$)|:)(.*)$")
CC_WARNINGS = ["-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", "-Wno-unused-variable",
               "-Wno-unused-function", "-Wno-unused-but-set-variable"]


def rel(page):
    """The page's path as failures name it: relative to the repository when it is in it."""
    return str(page.relative_to(REPO)) if page.is_relative_to(REPO) else str(page)


class Block:
    def __init__(self, page, line, lang, source):
        self.page, self.line, self.lang, self.source = page, line, lang, source
        self.skip = None
        self.setup = []
        self.check = []
        self.template = None

    @property
    def where(self):
        return f"{rel(self.page)}:{self.line}"


class NeedsBuild(Exception):
    """A block needs build/c (libkeel.a, the keel command), which is not there."""


def parse(page):
    """The page's code blocks with their directives, and its cleanup code."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, cleanups, pending = [], [], []
    hidden = set()   # lines of directives: directives may sit between a block and another one's
    i = 0

    def only_blank(a, b):
        return all(k in hidden or not lines[k].strip() for k in range(a + 1, b))

    def where(n):
        return f"{rel(page)}:{n + 1}"

    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        if m:
            indent, kind, rest = m.groups()
            start = i
            if rest.rstrip().endswith("-->"):
                body = [rest.rstrip()[:-3]]
            else:
                body = [rest]
                i += 1
                while i < len(lines) and lines[i].strip() != "-->":
                    body.append(lines[i])
                    i += 1
                if i == len(lines):
                    raise AssertionError(f"{where(start)}: directive never closed with -->")
            hidden.update(range(start, i + 1))
            text = textwrap.dedent("\n".join(body[1:])) if len(body) > 1 else ""
            if kind == ":":
                reason = rest.strip()
                reason = reason[:-3].strip() if reason.endswith("-->") else reason
                if not reason.startswith("skip:") or not reason[5:].strip():
                    raise AssertionError(f"{where(start)}: write <!-- test: skip: REASON --> "
                                         "with the reason (what covers the block instead)")
                pending.append(("skip", reason[5:].strip(), start))
            elif kind == "-check":
                if not blocks or not only_blank(blocks[-1]._end, start):
                    raise AssertionError(f"{where(start)}: test-check must follow a code block")
                blocks[-1].check.append(text)
            elif kind == "-cleanup":
                cleanups.append((text, start))
            else:
                pending.append((kind[1:], text, start))
            i += 1
            continue
        m = _FENCE.match(lines[i])
        if m:
            indent, fence, lang = m.groups()
            start = i
            body = []
            i += 1
            while i < len(lines) and not (lines[i].strip() == fence and
                                          lines[i].startswith(indent)):
                body.append(lines[i][len(indent):] if lines[i].startswith(indent)
                            else lines[i].lstrip())
                i += 1
            if i == len(lines):
                raise AssertionError(f"{where(start)}: code block never closed")
            block = Block(page, start + 1, lang, "\n".join(body) + "\n")
            block._end = i
            for kind, text, at in pending:
                if not only_blank(at_end(lines, at), start):
                    raise AssertionError(f"{where(at)}: directive is not just before a code block")
                if kind == "skip":
                    block.skip = text
                elif kind == "setup":
                    block.setup.append(text)
                elif kind == "c":
                    block.template = text
            pending = []
            blocks.append(block)
            i += 1
            continue
        i += 1
    if pending:
        raise AssertionError(f"{where(pending[0][2])}: directive is not followed by a code block")
    return blocks, cleanups


def at_end(lines, start):
    """The line where the directive starting at start ends."""
    j = start
    while "-->" not in lines[j]:
        j += 1
    return j


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sub_urls(text):
    return _DOC_URL_RE.sub(lambda m: DOC_URLS[m.group(0)], text)


class Harness:
    """What hidden code reaches as `harness`."""

    def __init__(self, tmp, loop):
        self.repo = REPO
        self.tmp = tmp
        self.loop = loop
        self.pg_url, self.mysql_url, self.mongo_url = PG_URL, MYSQL_URL, MONGO_URL
        self.out = ""            # what the last block printed (stdout)
        self.err = ""            # its stderr (sh, console, c)
        self.returncode = None   # its exit status (sh, console, c)
        self.outputs = []        # console: the output of each $ command
        self.shown = []          # console: the output the page shows after each $ command
        self.block = None        # the block being run (its .source, .where)
        self.subst = {}          # replacements applied to the next block's source, then cleared
        self.env = {}            # extra environment for sh, console and c blocks
        self.expect_status = 0   # the exit status the next sh / c block must have
        self.expect_raises = None  # an exception class the next python block must raise
        self.raised = None       # what it raised
        self.ns = None
        self.processes = []

    free_port = staticmethod(free_port)

    @staticmethod
    def table(text):
        """The rows of a table printed by keel check, as lists of words, the latency left out."""
        return [[w for k, w in enumerate(line.split()) if k != 3] for line in text.splitlines()]

    @property
    def source(self):
        """The current block's text, the suite's URLs in place of the documented ones."""
        return sub_urls(self.block.source)

    async def rerun(self, subst=None, **names):
        """Runs the current Python block again in a copy of the page's namespace with names
        replaced (another database, say) and the text replacements subst made; returns that
        namespace, with what it printed as "__out__". Awaited by a hidden check. A program that
        calls asyncio.run() runs in a thread of its own."""
        ns = {**self.ns, **names}
        source = self.source
        for old, new in (subst or {}).items():
            if old not in source:
                raise AssertionError(f"{self.block.where}: rerun: {old!r} is not in the block")
            source = source.replace(old, new)
        code = _compile(source, f"{self.block.where} (rerun)")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            if code.co_flags & 0x80:
                await eval(code, ns)
            elif "asyncio.run(" in source:
                await asyncio.to_thread(exec, code, ns)
            else:
                exec(code, ns)
        ns["__out__"] = buf.getvalue()
        return ns

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def need_build(self):
        if not (BUILD_C / "libkeel.a").is_file() or not (BUILD_C / "keel").is_file():
            raise NeedsBuild(f"{BUILD_C}/libkeel.a or {BUILD_C}/keel is missing (make build-c)")

    def environ(self, python=False):
        """The environment of the page's commands; python=True keeps a sanitizer run's
        variables for Python processes, which import the sanitized extension."""
        env = {k: v for k, v in os.environ.items()
               if (python or k not in _SANITIZER_VARS) and
               not (k.startswith("KEEL_") and not k.startswith("KEEL_TEST_"))}
        env["PATH"] = f"{BUILD_C}{os.pathsep}{pathlib.Path(sys.executable).parent}{os.pathsep}" \
                      + env.get("PATH", "")
        env.update(self.env)
        return env

    def start(self, argv, *, ready_port=None, env=None):
        """Starts a Python program (uvicorn...) in the background (stopped when the page ends);
        waits until it listens on ready_port."""
        p = subprocess.Popen(argv, cwd=self.tmp, env={**self.environ(python=True), **(env or {})},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.processes.append(p)
        if ready_port:
            import time
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", ready_port), timeout=1).close()
                    break
                except OSError:
                    if p.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(f"{argv} did not listen on {ready_port}: "
                                             f"{p.stderr.read().decode(errors='replace')}")
                    time.sleep(0.1)
        return p

    def stop(self):
        for p in self.processes:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.processes = []


def _compile(source, filename):
    return compile(source, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)


def run_python(h, source, filename):
    code = _compile(source, filename)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        if code.co_flags & 0x80:  # CO_COROUTINE: the block awaits at top level
            h.run(eval(code, h.ns))
        elif "asyncio.run(" in source:  # a program: it runs its own loop
            exec(code, h.ns)
        else:  # on the page's loop, as in a coroutine (db.pool_stats() must be)
            async def run_on_loop():
                exec(code, h.ns)
            h.run(run_on_loop())
    h.out = buf.getvalue()
    if h.out:
        sys.stdout.write(h.out)


def run_sh(h, block, source):
    if block.lang == "console":
        commands, h.shown = [], []
        for line in source.splitlines():
            if line.startswith("$ "):
                commands.append(line[2:])
                h.shown.append("")
            elif commands:
                h.shown[-1] += line + "\n"
        if not commands:
            raise AssertionError(f"{block.where}: a console block without any $ command")
    else:
        commands = [source]
    if re.search(r"(^|[\s/])keel\b|build/c/", source):
        h.need_build()
    h.outputs = []
    out_all, err_all = [], []
    for cmd in commands:
        p = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", cmd], cwd=h.tmp,
                           env=h.environ(), capture_output=True, text=True, timeout=120)
        h.outputs.append(p.stdout)
        out_all.append(p.stdout)
        err_all.append(p.stderr)
        h.returncode = p.returncode
        if p.returncode != h.expect_status:
            raise AssertionError(f"{block.where}: `{cmd}` exited {p.returncode}, expected "
                                 f"{h.expect_status}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    h.out, h.err = "".join(out_all), "".join(err_all)


def split_c_fragment(source):
    """(definitions, statements): #include lines and top-level functions, and the rest.

    A function definition starts at column 0 with a type and a name before its "(" and no ";"
    on that line, and ends with the next line starting with "}".
    """
    definitions, statements = [], []
    lines = source.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            definitions.append(line)
        elif re.match(r"^(static\s+)?(const\s+)?\w+[\s*]+\w+\s*\(", line) and ";" not in line:
            while i < len(lines):
                definitions.append(lines[i])
                if lines[i].startswith("}"):
                    break
                i += 1
        else:
            statements.append(line)
        i += 1
    return "\n".join(definitions) + "\n", "\n".join(statements) + "\n"


def run_c(h, block, source):
    h.need_build()
    if re.search(r"\bint\s+main\s*\(", source):
        program = source
    else:
        if block.template is None:
            raise AssertionError(f"{block.where}: a C fragment needs a <!-- test-c --> template "
                                 "(a program with {definitions} and {statements}) or a skip")
        definitions, statements = split_c_fragment(source)
        program = sub_urls(block.template).replace("{definitions}", definitions) \
                                          .replace("{statements}", textwrap.indent(statements, "    "))
    name = f"block_{block.line}"
    src = h.tmp / f"{name}.c"
    src.write_text(program, encoding="utf-8")
    extra = []
    if "<bson/bson.h>" in program:
        extra = shlex.split(subprocess.check_output(
            ["pkg-config", "--cflags", "--libs", "libbson-1.0"], text=True))
    libs = shlex.split(subprocess.check_output(["pkg-config", "--libs", "libpq", "yaml-0.1"],
                                               text=True))
    cmd = ["cc", "-std=c11", *CC_WARNINGS, f"-I{REPO / 'include'}", "-o", str(h.tmp / name),
           str(src), str(BUILD_C / "libkeel.a"), *libs, *extra, "-pthread", "-lm"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=h.environ(), timeout=120)
    if p.returncode != 0:
        numbered = "\n".join(f"{n + 1:4} {t}" for n, t in enumerate(program.splitlines()))
        raise AssertionError(f"{block.where}: the C block does not compile:\n{p.stderr}\n"
                             f"program:\n{numbered}")
    p = subprocess.run([str(h.tmp / name)], cwd=h.tmp, capture_output=True, text=True,
                       env=h.environ(), timeout=120)
    h.out, h.err, h.returncode = p.stdout, p.stderr, p.returncode
    if p.returncode != h.expect_status:
        raise AssertionError(f"{block.where}: the C program exited {p.returncode}, expected "
                             f"{h.expect_status}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")


def run_yaml(h, source):
    path = h.tmp / "keel.yaml"
    path.write_text(source, encoding="utf-8")
    h.out = ""
    h.ns.setdefault("keel", keel)
    # Validation without connecting: the constructor loads and validates the file.
    keel.Database(str(path))


def run_block(h, block):
    h.block = block
    source = block.source
    for old, new in h.subst.items():
        if old not in source:
            raise AssertionError(f"{block.where}: harness.subst: {old!r} is not in the block")
        source = source.replace(old, new)
    h.subst = {}
    source = sub_urls(source)
    if block.lang == "python" and h.expect_raises:
        expected, h.expect_raises = h.expect_raises, None
        try:
            run_python(h, source, block.where)
        except expected as e:
            h.raised = e
        else:
            raise AssertionError(f"{block.where}: the block did not raise {expected.__name__}")
    elif block.lang == "python":
        run_python(h, source, block.where)
    elif block.lang == "c":
        run_c(h, block, source)
    elif block.lang in ("sh", "console"):
        run_sh(h, block, source)
    elif block.lang == "json":
        h.out = json.loads(source)
    elif block.lang == "yaml":
        run_yaml(h, source)
    else:
        raise AssertionError(f"{block.where}: no way to run a {block.lang!r} block: tag it, skip "
                             "it with a reason, or teach test_docs.py")
    h.expect_status = 0


def run_hidden(h, code, where, what):
    try:
        run_python(h, sub_urls(code), f"{where} ({what})")
    except NeedsBuild:
        raise
    except BaseException as e:
        raise AssertionError(f"{where}: hidden {what} failed: {type(e).__name__}: {e}") from e


@pytest.mark.parametrize("page", PAGES, ids=[rel(p) for p in PAGES])
def test_page(page, tmp_path, monkeypatch):
    run_page(page, tmp_path, monkeypatch)


def run_page(page, tmp_path, monkeypatch):
    blocks, cleanups = parse(page)
    for k in list(os.environ):
        if k.startswith("KEEL_") and not k.startswith("KEEL_TEST_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    for name in ("build", "examples", "include"):
        (tmp_path / name).symlink_to(REPO / name)
    loop = asyncio.new_event_loop()
    h = Harness(tmp_path, loop)
    h.ns = {"__name__": "__main__", "__builtins__": __builtins__, "harness": h}
    h.run_sh = lambda src: run_sh(h, Block(page, 0, "sh", src), src)
    needs_build, ran, skipped = [], 0, 0
    try:
        for block in blocks:
            if block.lang in ("", "text"):
                # Text (a tree, a layout): not run, but a hidden check may compare it with keel.
                h.block = block
                for code in block.check:
                    run_hidden(h, code, block.where, "check")
                continue
            if block.skip:
                skipped += 1
                continue
            try:
                for code in block.setup:
                    run_hidden(h, code, block.where, "setup")
                try:
                    run_block(h, block)
                except NeedsBuild:
                    raise
                except AssertionError as e:
                    if str(e).startswith(block.where):
                        raise
                    raise AssertionError(f"{block.where}: {type(e).__name__}: {e}") from e
                except BaseException as e:
                    raise AssertionError(f"{block.where}: the {block.lang} block raised "
                                         f"{type(e).__name__}: {e}") from e
                for code in block.check:
                    run_hidden(h, code, block.where, "check")
                ran += 1
            except NeedsBuild as e:
                if os.environ.get("KEEL_DOCS_C") == "1":
                    raise AssertionError(f"{block.where}: {e}; KEEL_DOCS_C=1 requires it") from e
                needs_build.append(f"{block.where}: {e}")
    finally:
        try:
            for value in list(h.ns.values()):
                if isinstance(value, keel.Database):
                    loop.run_until_complete(asyncio.wait_for(value.close(), 30))
            for code, at in reversed(cleanups):
                run_hidden(h, code, f"{rel(page)}:{at + 1}", "cleanup")
        finally:
            h.stop()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
    if needs_build:
        pytest.skip(f"{ran} blocks ran, {skipped} skipped by the page; not run for want of a "
                    "build: " + "; ".join(needs_build))


# ---- the harness itself: what it refuses, and how it names a failing block ----

BAD_PAGES = {
    "a skip without a reason": ("text\n\n<!-- test: skip: -->\n```sh\nmake test\n```\n",
                                "bad.md:3: write <!-- test: skip: REASON -->"),
    "a setup followed by text": ("<!-- test-setup\nx = 1\n-->\nsome text\n```python\nx\n```\n",
                                 "bad.md:1: directive is not just before a code block"),
    "a setup at the end": ("```python\nx = 1\n```\n<!-- test-setup\nx = 1\n-->\n",
                           "bad.md:4: directive is not followed by a code block"),
    "a check after text": ("```python\nx = 1\n```\ntext\n<!-- test-check\nassert x\n-->\n",
                           "bad.md:5: test-check must follow a code block"),
    "an unclosed directive": ("<!-- test-setup\nx = 1\n```python\nx\n```\n",
                              "bad.md:1: directive never closed with -->"),
    "an unclosed block": ("```python\nx = 1\n", "bad.md:1: code block never closed"),
}


@pytest.mark.parametrize("case", list(BAD_PAGES))
def test_malformed_directives_are_refused_naming_the_line(case, tmp_path):
    text, message = BAD_PAGES[case]
    page = tmp_path / "bad.md"
    page.write_text(text, encoding="utf-8")
    with pytest.raises(AssertionError) as e:
        parse(page)
    assert str(e.value).startswith(str(tmp_path / message)), str(e.value)


FAILING_PAGES = {
    "a block that raises": ("# t\n\n```python\nx = 1\n1 / 0\n```\n",
                            "bad.md:3: the python block raised ZeroDivisionError"),
    "a check that fails": ("```python\nx = 1\n```\n<!-- test-check\nassert x == 2, x\n-->\n",
                           "bad.md:1: hidden check failed: AssertionError: 1"),
    "a later block without the names of a failed setup":
        ("```python\nx = 1\n```\n\n<!-- test-setup\ny = x + z\n-->\n```python\ny\n```\n",
         "bad.md:8: hidden setup failed: NameError: name 'z' is not defined"),
    "a shell command that fails": ("```sh\nfalse\n```\n", "bad.md:1: `false\n` exited 1, expected 0"),
    "a block of an unknown language": ("```ruby\nputs 1\n```\n", "bad.md:1: no way to run a 'ruby' block"),
    "a C fragment without a template": ("```c\nint x = 1;\n```\n",
                                        "bad.md:1: a C fragment needs a <!-- test-c --> template"),
    "a C program that does not compile": ("```c\nint main(void) { return y; }\n```\n",
                                          "bad.md:1: the C block does not compile"),
    "a json block that is not JSON": ("```json\n{\"a\": }\n```\n",
                                      "bad.md:1: the json block raised JSONDecodeError"),
}


@pytest.mark.parametrize("case", list(FAILING_PAGES))
def test_a_failing_block_fails_the_page_naming_its_line(case, tmp_path, monkeypatch):
    text, message = FAILING_PAGES[case]
    if "```c" in text and not (BUILD_C / "libkeel.a").is_file():
        pytest.skip("build/c/libkeel.a is missing (make build-c)")
    page = tmp_path / "bad.md"
    page.write_text(text, encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(AssertionError) as e:
        run_page(page, work, monkeypatch)
    assert str(e.value).startswith(str(tmp_path / message)), str(e.value)


def test_blocks_share_one_namespace_and_one_loop(tmp_path, monkeypatch):
    page = tmp_path / "good.md"
    page.write_text(textwrap.dedent("""\
        ```python
        import asyncio
        loop = asyncio.get_running_loop()
        ```
        <!-- test-setup
        seen = loop
        -->
        ```python
        assert asyncio.get_running_loop() is seen
        await asyncio.sleep(0)
        print("same loop")
        ```
        <!-- test-check
        assert harness.out == "same loop\\n", harness.out
        -->
        ```text
        not run
        ```
        """), encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    run_page(page, work, monkeypatch)


# ---- links between the pages ----

_LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page):
    """The anchors GitHub gives the headings of page (lower case, punctuation dropped, spaces
    as hyphens, -1, -2 … for repeats)."""
    seen, out = {}, set()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            in_code = not in_code
        m = re.match(r"^#{1,6} (.*)$", line)
        if in_code or not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=[rel(p) for p in PAGES])
def test_links_lead_to_files_and_headings_that_exist(page):
    text = re.sub(r"(?ms)^( *)(`{3,}).*?^\1\2\s*$", "", page.read_text(encoding="utf-8"))
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {rel(dest)}")
    assert not broken, f"{rel(page)}: " + "; ".join(broken)
