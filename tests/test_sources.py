"""What the course says of Castling-ViT comes from its two sources, word for word.

`tutorials/sources.md` holds the ledger, every phrase the course quotes from the paper or its authors with
the source it is from, and the source texts themselves (the abstract; the authors' README, attention.py and
block figure). These tests find every quoted phrase in the tutorials, the README, the guide, the answer key
and the package's docstrings and comments; a phrase attributed to the paper or its authors (a "paper",
"abstract", "authors", "Castling-ViT" … in its sentence), or one that copies three or more words of a
source, must be in the ledger and in the source the ledger names. No section, equation, figure or table
number may be cited: neither source gives one.
"""

import ast
import io
import json
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "tutorials" / "sources.md"
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.ipynb"))
DOCUMENTS = [ROOT / "README.md", ROOT / "tutorials" / "README.md", ROOT / "tutorials" / "answer_key.md"]
PACKAGE = sorted((ROOT / "minicastling").rglob("*.py"))

LEDGER_LINE = re.compile(r'^- "(?P<phrase>.+)" \((?P<source>[^()]+)\)$')
QUOTE = re.compile(r'"(?P<straight>[^"]+)"|“(?P<curly>[^”]+)”')
ATTRIBUTION = re.compile(r"\b(paper|abstract|authors?'?|castling-vit|you et al|caption|title|attention\.py|"
                         r"their (readme|code|figure|module|release|block figure))", re.IGNORECASE)
SENTENCE_END = re.compile(r"[.?!]\s|\n\s*\n|\||\n\s*[-*] ")
CITATIONS = [  # a number of the paper's sections, equations, figures or tables, in any spelling
    re.compile(r"\bSecs?\.\s*\d|§\s*\d|\bsections?\s+\d+\.\d", re.IGNORECASE),
    re.compile(r"\bEqs?\.\s*\(?\d|\bequations?\s*\(\d", re.IGNORECASE),
    re.compile(r"\bFigs?\.\s*\d|\bFigures?\s+\d"),
    re.compile(r"\bTab(le)?s?\.?\s+\d"),
]
# Tutorial 07 is being rebuilt: its current header still cites a section of the paper and calls the branch
# "the paper's central claim". The mark is strict, so the test fails once the rebuilt 07 passes: remove it then.
BEING_REBUILT = {}  # notebook name: why it may fail for now (strict: it must start passing when fixed)


def normalise(text: str) -> str:
    return " ".join(text.split())


def read_sources() -> tuple[dict, dict]:
    """({phrase: source name}, {source name: its text}) from tutorials/sources.md."""
    text = SOURCES.read_text(encoding="utf-8")
    ledger_part = text.split("\n## Ledger\n", 1)[1].split("\n## ", 1)[0]
    ledger = {}
    for line in ledger_part.splitlines():
        if line.startswith("- "):
            entry = LEDGER_LINE.match(line)
            assert entry, f"tutorials/sources.md: a ledger line must read '- \"phrase\" (source)': {line!r}"
            ledger[normalise(entry["phrase"])] = entry["source"]
    texts = {}
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        name, body = section.split("\n", 1)
        block = re.search(r"```text\n(.*?)```", body, re.S)
        if block:
            texts[name.strip()] = normalise(block[1])
    return ledger, texts


LEDGER, SOURCE_TEXTS = read_sources()


def found_in(phrase: str, text: str) -> bool:
    """The phrase's words, in order, in the text; an ellipsis (… or ...) in a quote marks words left out."""
    position = 0
    for fragment in (normalise(f) for f in re.split(r"…|\.\.\.", phrase)):
        if not fragment:
            continue
        hit = re.compile(r"(?<!\w)" + re.escape(fragment) + r"(?!\w)").search(text, position)
        if not hit:
            return False
        position = hit.end()
    return True


def markdown_prose(text: str) -> str:
    """Markdown without code blocks, inline code, HTML comments and blockquote marks: what a reader reads as
    sentences."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"^[ \t]*> ?", "", text, flags=re.M)  # a quotation that runs on in a box is one sentence
    return re.sub(r"`[^`\n]*`", "", text)


def python_prose(source: str) -> str:
    """The docstrings and comments of Python source, one paragraph each."""
    parts = []
    try:
        tree = ast.parse(source)
    except SyntaxError:  # a cell with an IPython magic: keep its comments
        return "\n\n".join(line.split("#", 1)[1] for line in source.splitlines() if "#" in line)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            docstring = ast.get_docstring(node)
            if docstring:
                parts.append(markdown_prose(docstring))
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            parts.append(markdown_prose(token.string.lstrip("#")))
    return "\n\n".join(parts)


def readings(path: Path) -> tuple[str, str]:
    """(prose to search for quotes, the whole text to search for citations) of a file the course ships."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        prose, whole = [], []
        for cell in cells:
            source = "".join(cell["source"])
            whole.append(source)
            prose.append(markdown_prose(source) if cell["cell_type"] == "markdown" else python_prose(source))
        return "\n\n".join(prose), "\n\n".join(whole)
    text = path.read_text(encoding="utf-8")
    return (python_prose(text) if path.suffix == ".py" else markdown_prose(text)), text


def context(prose: str, start: int, end: int) -> str:
    """The quote's sentence up to the quote, and a parenthesis right after it: where an attribution sits."""
    boundary = max((m.end() for m in SENTENCE_END.finditer(prose, max(0, start - 400), start)), default=max(0, start - 400))
    after = re.match(r"[\s,:;]*\([^()\n]{0,60}\)", prose[end:])
    return prose[boundary:start] + (after[0] if after else "")


def quote_problems(prose: str, where: str) -> list[str]:
    """Every quoted phrase the prose attributes to the paper or its authors, or copies from a source, that is
    not in the ledger, or not in the source the ledger names, word for word."""
    problems = []
    for match in QUOTE.finditer(prose):
        raw = match["straight"] or match["curly"]
        if "\n\n" in raw or len(raw) > 400:  # not a quote: a stray mark pairs with one paragraphs away
            continue
        phrase = normalise(raw).strip(" ,.;:")
        line = prose.count("\n", 0, match.start()) + 1
        if phrase in LEDGER:
            source = LEDGER[phrase]
            if source not in SOURCE_TEXTS or not found_in(phrase, SOURCE_TEXTS[source]):
                problems.append(f'{where}: "{phrase}" is not in the {source}, word for word')
            continue
        if " " not in phrase:  # one word: a name or a value in quotes, not a quotation
            continue
        copied = [name for name, text in SOURCE_TEXTS.items() if len(phrase.split()) >= 3 and found_in(phrase, text)]
        attributed = ATTRIBUTION.search(context(prose, match.start(), match.end()))
        if attributed or copied:
            said = f"quoted from the {copied[0]}" if copied else f"quoted as the paper's or the authors' ('{attributed[0]}' in its sentence)"
            problems.append(f'{where}, near prose line {line}: "{phrase}" is {said} but is not in the ledger of '
                            "tutorials/sources.md: quote a source word for word and add the phrase there, or say it "
                            "as the course's own words without quotation marks")
    return problems


def citation_problems(text: str, where: str) -> list[str]:
    problems = []
    for pattern in CITATIONS:
        for match in pattern.finditer(text):
            start = text.rfind("\n", 0, match.start()) + 1
            line = text.count("\n", 0, match.start()) + 1
            problems.append(f"{where}:{line}: '{match[0]}' cites a numbered part of the paper, which neither source "
                            f"gives: {text[start:text.find(chr(10), match.end())].strip()[:120]!r}")
    return problems


def problems_in(path: Path) -> list[str]:
    prose, whole = readings(path)
    where = str(path.relative_to(ROOT))
    return quote_problems(prose, where) + citation_problems(whole, where)


def shipped_files():
    for path in TUTORIALS + DOCUMENTS + PACKAGE:
        name = str(path.relative_to(ROOT))
        marks = [pytest.mark.xfail(strict=True, reason=BEING_REBUILT[path.name])] if path.name in BEING_REBUILT else []
        yield pytest.param(path, id=name, marks=marks)


def test_the_ledger_names_known_sources_and_quotes_them_word_for_word():
    assert set(SOURCE_TEXTS) == {"abstract", "authors' README", "authors' attention.py",
                                 "authors' figure castling-vit.png"}, sorted(SOURCE_TEXTS)
    assert len(LEDGER) >= 10
    for phrase, source in LEDGER.items():
        assert source in SOURCE_TEXTS, f'"{phrase}": unknown source {source!r}; use one of {sorted(SOURCE_TEXTS)}'
        assert found_in(phrase, SOURCE_TEXTS[source]), f'"{phrase}" is not in the {source}, word for word'


def test_the_copied_abstract_is_the_published_one():
    """The committed copy of the abstract matches the course's reference copy, where that copy exists."""
    reference = ROOT.parent / "shared" / "sources" / "castling_vit.md"
    if not reference.is_file():
        pytest.skip("the reference copy of the abstract is not beside this clone")
    published = normalise(reference.read_text(encoding="utf-8").split("## Abstract", 1)[1])
    assert SOURCE_TEXTS["abstract"] == published


@pytest.mark.parametrize("path", list(shipped_files()))
def test_quotes_come_from_the_sources_and_no_numbered_part_of_the_paper_is_cited(path):
    problems = problems_in(path)
    assert not problems, "\n".join(problems)


def test_every_ledger_phrase_is_quoted_somewhere():
    prose = "\n\n".join(readings(path)[0] for path in TUTORIALS + DOCUMENTS + PACKAGE)
    quoted = {normalise(m["straight"] or m["curly"]).strip(" ,.;:") for m in QUOTE.finditer(prose)}
    unused = sorted(set(LEDGER) - quoted)
    assert not unused, f"ledger phrases no file quotes any more (remove them from tutorials/sources.md): {unused}"


@pytest.mark.parametrize("text, words", [
    ('The paper says that attention "is all you need".', "is all you need"),
    ('As the authors put it, "castling is free".', "castling is free"),
    ('Castling-ViT "keeps only the linear terms" (abstract).', "keeps only the linear terms"),
    ('A phrase "decompose the angular kernels into linear terms" copied without naming its source.', "quoted from the abstract"),
    ("The angular kernel (Sec. 3.2) is bounded.", "Sec. 3"),
    ("As in Eq. (3), and Fig. 3 of the paper.", "Eq. (3"),
    ("Table 2 reports the accuracy.", "Table 2"),
])
def test_the_checks_catch_a_bad_quote_and_a_cited_number(text, words):
    problems = quote_problems(markdown_prose(text), "planted") + citation_problems(text, "planted")
    assert any(words in problem for problem in problems), problems


@pytest.mark.parametrize("text", [
    'The abstract says the masks are "regularized to gradually become zeros".',
    'Their README says it is "supposed to be an unofficial release of miniature code to reveal the core '
    'implementation of our attention block".',
    'The course calls this the "kernel form" and writes `form="kernel"`; section 6 shows it.',
    'Its value is "official" or "kernel"; Section 5 wrote the layer.',
])
def test_the_checks_pass_a_right_quote_and_the_course_s_own_words(text):
    assert quote_problems(markdown_prose(text), "planted") + citation_problems(text, "planted") == []
