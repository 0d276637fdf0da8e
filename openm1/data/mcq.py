"""``openm1 data mcq-to-open``: multiple-choice questions rewritten as open-ended ones.

The paper turned its multiple-choice questions into open-ended ones (no options to guess among) with
the correct option's text as the reference answer. :func:`reformulate` does it for one question,
:func:`mcq_to_open` for a JSONL file.

Options are read from an options field in any of the common shapes (a list of texts, as MMLU;
``{"text": [...], "label": [...]}``, as ARC and OpenBookQA; ``{"A": ..., "B": ...}``; a list of
``{"label", "text"}`` objects) or, when the row has none, from the question text itself (``A. ...``
/ ``(B) ...`` / ``C) ...`` lines, or inline ``(A) ... (B) ...``). The answer may be a letter
(``B``, ``(b)``, ``Answer: B``), an index (0-based by default, as MMLU), or the option's text.

A question is dropped, with its reason, when it cannot stand without its options:

- ``refers_to_options``: the stem points at the options ("which of the following", "which of these",
  "all of the above", "option B", "下列" ...);
- ``answer_refers_to_options``: the correct option only makes sense among the others ("All of the
  above", "None of these", "Both A and B", "A and C");
- ``binary_answer``: the answer is yes/no or true/false, which an open question leaves to a coin;
- ``no_options``, ``answer_unresolved``, ``multiple_answers``, ``empty_stem``, ``empty_answer``:
  the row is not a well-formed single-answer multiple-choice question.

These checks are heuristics over wording (English, and a few Chinese phrasings); the report lists
every drop with its reason so that a person can audit them.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import IO, Any

from openm1.data.keys import KeyTemplate
from openm1.data.ngram import normalize
from openm1.data.pipeline import Run
from openm1.data.report import Summary, ref

LETTERS = "ABCDEFGHIJKLMNOP"

DROP_REASONS = (
    "refers_to_options",
    "answer_refers_to_options",
    "binary_answer",
    "no_options",
    "answer_unresolved",
    "multiple_answers",
    "empty_stem",
    "empty_answer",
)

# Stems that cannot be answered without seeing the options.
_REFERS = re.compile(
    r"|".join(
        [
            r"\bwhich\s+(?:one\s+|two\s+|three\s+)?of\s+(?:the\s+)?(?:following|these|those|above|below|"
            r"options|choices|answers|statements|items|alternatives)\b",
            r"\b(?:the|these)\s+following\b",
            r"\bfollowing\s+(?:options|choices|statements|answers|is|are|would|could|best|most|least)\b",
            r"\b(?:all|none|both|neither|each)\s+of\s+the\s+(?:above|below|options|choices)\b",
            r"\b(?:of|from|among)\s+the\s+(?:options|choices|answers|alternatives)\b",
            r"\b(?:options?|choices?|answers?)\s+\(?[a-h]\)?\s*(?:and|or|is|are|,|\.|$)",
            r"\b(?:select|choose|pick|circle|mark)\s+(?:the\s+)?(?:correct|best|right|most|one|all|an?)\b",
            r"\bwhich\s+(?:statement|option|choice|answer|sentence)s?\b",
            r"\blisted\s+(?:above|below)\b",
            r"以下|下列|哪一项|哪个选项|哪项|选项",
        ]
    ),
    re.IGNORECASE,
)

# Correct options that only make sense next to the other options.
_ANSWER_REFERS = re.compile(
    r"^(?:(?:all|none|both|neither|any)\s+of\s+(?:the\s+)?(?:above|these|those|them|the\s+options|the\s+choices)"
    r"|(?:all|none|both)\s+(?:the\s+)?(?:above|of\s+these)"
    r"|both\s*\(?[a-h]\)?\s*(?:and|&)\s*\(?[a-h]\)?"
    r"|\(?[a-h]\)?\s*(?:,\s*\(?[a-h]\)?\s*)*(?:and|&|or)\s*\(?[a-h]\)?"
    r"|neither\s*\(?[a-h]\)?\s*nor\s*\(?[a-h]\)?"
    r"|(?:以上都|以上皆|都不|以上均).*)[\s.!]*$",
    re.IGNORECASE,
)

_BINARY = {
    "yes",
    "no",
    "true",
    "false",
    "correct",
    "incorrect",
    "right",
    "wrong",
    "是",
    "否",
    "对",
    "错",
    "正确",
    "错误",
}

# An option marker: "A." "A)" "(A)" "A:" "A、" at a line start or after whitespace, followed by text.
_MARKER = re.compile(r"(?:(?<=\s)|^)(?:\(([A-Pa-p])\)|([A-P])[.)：:、])(?=\s|\S)", re.MULTILINE)
_ANSWER_LETTER = re.compile(
    r"^\s*(?:the\s+)?(?:correct\s+)?(?:answer|option|choice)?\s*(?:is|:)?\s*\(?([A-Pa-p])\)?\s*[.)]?\s*$",
    re.IGNORECASE,
)
_MANY_LETTERS = re.compile(r"^\s*\(?[A-Pa-p]\)?(?:\s*(?:,|and|&|\s)\s*\(?[A-Pa-p]\)?)+\s*$", re.IGNORECASE)
_PREFIX = re.compile(r"^\s*(?:\(([A-Pa-p])\)|([A-Pa-p])[.)：:、])\s*")


@dataclass
class McqResult:
    """An open-ended question and its reference answer, or why there is none."""

    question: str | None = None
    answer: str | None = None
    reason: str | None = None  # one of DROP_REASONS, None when rewritten
    detail: str = ""  # what triggered the drop (the matched wording, say)
    letter: str | None = None  # the correct option's letter

    @property
    def ok(self) -> bool:
        return self.reason is None


def options_from_field(value: Any) -> list[tuple[str, str]] | None:
    """``[(letter, text), ...]`` from an options field in one of the shapes the module doc lists."""
    if isinstance(value, dict):
        if "text" in value and isinstance(value["text"], list):  # ARC / OpenBookQA
            labels = value.get("label") or LETTERS[: len(value["text"])]
            return [(str(lab).strip().upper(), str(t)) for lab, t in zip(labels, value["text"], strict=False)]
        return [(str(k).strip().strip("().").upper(), str(v)) for k, v in value.items()]
    if isinstance(value, list):
        out = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                text = item.get("text", item.get("content", item.get("value")))
                label = item.get("label", item.get("key", LETTERS[i] if i < len(LETTERS) else str(i)))
                if text is None:
                    return None
                out.append((str(label).strip().upper(), str(text)))
            else:
                text = str(item)
                m = _PREFIX.match(text)
                # "A. Paris" in a list: the prefix is the option's own letter
                if m and (m.group(1) or m.group(2)).upper() == LETTERS[i % len(LETTERS)]:
                    text = text[m.end() :]
                out.append((LETTERS[i] if i < len(LETTERS) else str(i), text))
        return out
    return None


def options_from_text(question: str) -> tuple[str, list[tuple[str, str]]] | None:
    """``(stem, [(letter, text), ...])`` when the question text carries its options (A, B, C, ...)."""
    marks = [(m.start(), m.end(), (m.group(1) or m.group(2)).upper()) for m in _MARKER.finditer(question)]
    best: list[tuple[int, int, str]] = []
    for i, (_, _, letter) in enumerate(marks):
        if letter != "A":
            continue
        run = [marks[i]]
        for m in marks[i + 1 :]:
            if m[2] == LETTERS[len(run)]:
                run.append(m)
        if len(run) >= 2 and len(run) >= len(best):
            best = run
    if not best:
        return None
    stem = question[: best[0][0]]
    opts = []
    for j, (_, end, letter) in enumerate(best):
        stop = best[j + 1][0] if j + 1 < len(best) else len(question)
        opts.append((letter, question[end:stop].strip()))
    return stem, opts


def _resolve(answer: Any, options: list[tuple[str, str]], index_base: int) -> tuple[str | None, str]:
    """(letter of the correct option or None, reason when None)."""
    letters = [lab for lab, _ in options]
    if isinstance(answer, bool) or answer is None:
        return None, "answer_unresolved"
    if isinstance(answer, int):
        i = answer - index_base
        return (letters[i], "") if 0 <= i < len(letters) else (None, "answer_unresolved")
    if isinstance(answer, list):
        if len(answer) == 1:
            return _resolve(answer[0], options, index_base)
        return None, "multiple_answers" if answer else "answer_unresolved"
    a = str(answer).strip()
    by_text = [lab for lab, t in options if normalize(t) == normalize(a) and normalize(a)]
    m = _ANSWER_LETTER.match(a)
    if m and m.group(1).upper() in letters and not by_text:
        return m.group(1).upper(), ""
    if by_text:
        return by_text[0], ""
    if a.isdigit():
        return _resolve(int(a), options, index_base)
    if _MANY_LETTERS.match(a):
        return None, "multiple_answers"
    return None, "answer_unresolved"


def reformulate(question: str, options: Any = None, answer: Any = None, index_base: int = 0) -> McqResult:
    """The open-ended form of one multiple-choice question (see the module doc for the rules)."""
    stem = question
    opts = options_from_field(options) if options is not None else None
    if opts is None:
        parsed = options_from_text(question)
        if parsed is None:
            return McqResult(reason="no_options")
        stem, opts = parsed
    if len(opts) < 2:
        return McqResult(reason="no_options")
    stem = stem.strip()
    if not stem:
        return McqResult(reason="empty_stem")
    letter, why = _resolve(answer, opts, index_base)
    if letter is None:
        return McqResult(reason=why, detail=str(answer))
    text = dict(opts)[letter].strip()
    if not text:
        return McqResult(reason="empty_answer", letter=letter)
    m = _REFERS.search(stem)
    if m:
        return McqResult(reason="refers_to_options", detail=m.group(), letter=letter)
    if _ANSWER_REFERS.match(text):
        return McqResult(reason="answer_refers_to_options", detail=text, letter=letter)
    if normalize(text) in _BINARY:
        return McqResult(reason="binary_answer", detail=text, letter=letter)
    return McqResult(question=stem, answer=text, letter=letter)


def mcq_to_open(
    inputs: list[str],
    output: str | None,
    key: str = "question",
    *,
    options_field: str = "options",
    answer_field: str = "answer",
    original_field: str | None = "mcq",
    index_base: int = 0,
    report: str | None = None,
    log: IO[str] | None = sys.stderr,
) -> Summary:
    """Rewrite each row's question (field ``key``) as an open-ended one, its answer (``answer_field``)
    as the correct option's text; the options field is removed and, unless ``original_field`` is
    None, the original question, options and answer are kept under ``original_field``. Every other
    field is kept. Rows that cannot be rewritten are dropped and reported with their reason."""
    q = KeyTemplate(key)
    if len(q.fields) != 1 or q.parts[0] or q.parts[2]:
        raise ValueError(f"mcq-to-open: --key must name the question field itself, not a template ({key!r})")
    qfield = q.fields[0]
    with Run("mcq-to-open", inputs, output, q, report, log) as run:
        s = run.summary
        for rows in run.rows(4096):
            for r in rows:
                if answer_field not in r.obj or r.obj[answer_field] is None:
                    run.problems.add(r.file, r.line, "missing_field", f"missing field {answer_field!r}")
                    continue
                options = r.obj.get(options_field)
                res = reformulate(r.text, options, r.obj[answer_field], index_base)
                if not res.ok:
                    s.dropped += 1
                    s.reasons[res.reason] += 1
                    run.report.add(
                        {
                            "type": "drop",
                            "row": ref(run.inputs, r.rid, text=r.text),
                            "reason": res.reason,
                            "detail": res.detail,
                        }
                    )
                    continue
                obj = dict(r.obj)
                original = {
                    "question": r.text,
                    "options": options,
                    "answer": obj[answer_field],
                    "letter": res.letter,
                }
                obj[qfield] = res.question
                obj[answer_field] = res.answer
                obj.pop(options_field, None)
                if original_field:
                    obj[original_field] = original
                run.out.write_line(json.dumps(obj, ensure_ascii=False))
                s.kept += 1
    return s
