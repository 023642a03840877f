"""Rendering each contact's letter from the Jinja2 templates.

The templates are edited by hand and the contact data comes from outside, so
the environment is sandboxed (a template cannot reach Python's internals),
undefined variables are errors (a typo must not send "Dear ,"), and only the
HTML templates are autoescaped (the text part keeps "<" as it is).

Inlining the CSS is most of the cost of a letter, and every letter has the
same markup: only the contact's values differ. So the HTML is also rendered
as a *skeleton*, each value replaced by a marker, the skeleton is inlined
once, and each letter's values are put back where the markers landed. That
shortcut is taken only when it provably gives the very bytes the full
inlining would (see ``_SkeletonPlan``); otherwise the letter is inlined in
full, as it always was.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import importlib.util
import logging
import re
import textwrap
import threading
import traceback
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.sandbox import SandboxedEnvironment
from lxml import etree

from outreach.cache import file_stamp, keep, recall
from outreach.contacts import Contact
from outreach.errors import TemplateError

DEFAULT_LANGUAGE = "en"
SUBJECT, TEXT, HTML = "subject.txt.j2", "letter.txt.j2", "letter.html.j2"


@dataclass(frozen=True)
class Rendered:
    """One contact's letter: subject line, plain text and inlined HTML."""

    subject: str
    text: str
    html: str
    language: str


def load_data_files(templates_dir: Path) -> dict[str, list[dict[str, str]]]:
    """Each ``templates/*.csv`` as a list of rows, named by the file.

    Lists such as the signatories are data, not markup: kept in a CSV, they
    are edited like the contacts and rendered the same way in both versions.
    """
    data: dict[str, list[dict[str, str]]] = {}
    for path in sorted(templates_dir.glob("*.csv")):
        if not path.stem.isidentifier():
            continue
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                data[path.stem] = [
                    {k.strip(): (v or "").strip() for k, v in row.items() if k}
                    for row in csv.DictReader(handle, strict=True)
                ]
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise TemplateError(f"{path}: cannot be read ({err})") from err
    return data


def _inline_css(html: str) -> str:
    """The HTML with its <style> block moved into style attributes.

    Many mail clients drop <style>; premailer inlines it. ``!important`` and
    ``@media`` rules stay (the latter in a <style> block, where clients that
    understand them look), and nothing is ever fetched from the network.
    """
    # Imported here: premailer brings cssutils and requests, a fifth of a
    # second that commands which never inline (report, --help) need not pay.
    import premailer

    return str(premailer.Premailer(html, **_INLINE_OPTIONS).transform())


_INLINE_OPTIONS: dict[str, Any] = {
    "strip_important": False,
    "allow_network": False,
    "allow_loading_external_files": False,
    "disable_validation": True,
    "cssutils_logging_level": logging.CRITICAL,
}


def _inliner_identity() -> str:
    """What the inlined HTML depends on besides the page: the inliner's own files.

    Their size and time of change (``file_stamp``): an upgraded premailer,
    cssutils or lxml makes every cached page stale.
    Found without importing them, which is what the cache saves.
    """
    parts = ["outreach-inline-1", repr(_INLINE_OPTIONS)]
    for module in ("premailer", "cssutils", "lxml"):
        spec = importlib.util.find_spec(module)
        origin = spec.origin if spec else None
        if origin is None:
            return ""
        parts.append(file_stamp(Path(origin)))
    return "\0".join(parts)


def _inline_css_cached(html: str) -> str:
    """``_inline_css(html)``, from the cache folder when an earlier run inlined it.

    A skeleton holds the letter's wording and markup, never a contact's values.
    """
    identity = _inliner_identity()
    if not identity:
        return _inline_css(html)
    name = hashlib.sha256(f"{identity}\0{html}".encode()).hexdigest() + ".html"
    inlined = recall("inlined", name)
    if inlined is None:
        inlined = _inline_css(html)
        keep("inlined", name, inlined)
    return inlined


#: A value's marker in a skeleton: its index between two private-use characters.
_OPEN, _CLOSE = "\ue000", "\ue001"
_MARKER = re.compile("\ue000([0-9]+)\ue001")
#: A letter holding a value with any of these is inlined in full: the marker
#: characters, control characters other than tab and newline (the parser
#: rewrites or drops some of them), surrogates and noncharacters.
_UNSAFE_VALUE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\ue000\ue001\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]"
)
#: Punctuation a value inside an attribute may hold besides letters, digits
#: and spaces: nothing the serialiser escapes, quotes or treats specially.
_ATTRIBUTE_PUNCTUATION = frozenset(" -_.,:;/()!?@+#%=*~")
#: Elements whose text is not ordinary markup (raw text or RCDATA): a value
#: inside them is never put back by substitution.
_SPECIAL_TEXT_PARENTS = frozenset(
    {
        "iframe",
        "noembed",
        "noframes",
        "noscript",
        "plaintext",
        "script",
        "style",
        "template",
        "textarea",
        "title",
        "xmp",
    }
)
#: Elements whose attributes premailer or the parser read, and attributes
#: that style selectors or premailer read: no value may stand in them.
_SPECIAL_ATTRIBUTE_ELEMENTS = frozenset({"base", "link", "meta", "script", "style"})
_SPECIAL_ATTRIBUTES = frozenset({"class", "data-premailer", "id", "style"})
_PLAN_CACHE_SIZE = 32


@dataclass
class InlineStats:
    """How the letters' HTML was inlined: from a shared skeleton, or in full.

    ``reasons`` counts why letters were inlined in full, by reason.
    """

    shared: int = 0
    full: int = 0
    skeletons: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def fell_back(self, reason: str) -> None:
        self.full += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


class _Recorder(threading.local):
    """The values a skeleton's markers stand for, while one is rendered."""

    def __init__(self) -> None:
        self.values: list[str] | None = None


def _recording_finalize(recorder: _Recorder) -> Any:
    """A ``finalize`` hook that swaps each escaped string value for a marker.

    Only plain ``str`` values in autoescaped output are swapped: markup
    (``Markup``, block output, objects with ``__html__``) and everything else
    is written as usual and so belongs to the skeleton.
    """

    @jinja2.pass_eval_context
    def finalize(eval_ctx: EvalContext, value: Any) -> Any:
        values = recorder.values
        if values is None or type(value) is not str or not eval_ctx.autoescape:
            return value
        values.append(value)
        return f"{_OPEN}{len(values) - 1}{_CLOSE}"

    return finalize


def _parse(html: str) -> tuple[str, Any]:
    """The page as premailer parses it: stripped, then lxml's HTML parser."""
    stripped = html.strip()
    return stripped, etree.fromstring(stripped, etree.HTMLParser()).getroottree()


def _nodes(tree: Any) -> list[Any]:
    """Every node of the document in order, the root's siblings included."""
    root = tree.getroot()
    return [*reversed(list(root.itersiblings(preceding=True))), *root.iter(), *root.itersiblings()]


def _shape(stripped: str, tree: Any) -> list[object]:
    """The parsed page as a flat list: what premailer's result depends on.

    Each node gives its kind or tag, child count, text, tail, PI target and
    attributes in order; with the doctype and whether the page starts with
    it, two pages of equal shape are the same tree.
    """
    doctype = tree.docinfo.doctype
    shape: list[object] = [doctype, stripped.startswith(doctype)]
    for node in _nodes(tree):
        tag = node.tag
        is_element = isinstance(tag, str)
        shape += (
            tag if is_element else type(node).__name__,
            len(node),
            node.text,
            node.tail,
            getattr(node, "target", None),
        )
        if is_element:
            attrib = node.attrib
            shape.append(len(attrib))
            for name, value in attrib.items():
                shape += (name, value)
    return shape


def _has_marker(text: object) -> bool:
    return isinstance(text, str) and (_OPEN in text or _CLOSE in text)


#: Where a value stands: ("text", parent tag, "") or ("attribute", tag, name).
_Context = tuple[str, str, str]


@dataclass
class _SkeletonPlan:
    """One skeleton: where its values stand, and once inlined, around what.

    A letter's values are put back only when its real page parses to the
    skeleton's tree with the markers replaced by the values, node for node
    (``shape``, ``marked``). Premailer works on that tree, and its choices
    depend on tags, classes, ids, the style sheet and style attributes, none
    of which a value may touch; so its result for the real page is its result
    for the skeleton with each marker replaced by the value as lxml writes it
    in that place.
    """

    contexts: tuple[_Context, ...]
    shape: list[object]
    marked: tuple[int, ...]
    parts: tuple[str, ...] | None = None
    order: tuple[int, ...] = ()


def _plan_skeleton(skeleton: str, count: int) -> _SkeletonPlan | str:
    """The plan for a skeleton of ``count`` values, or why there is none."""
    try:
        stripped, tree = _parse(skeleton)
    except (etree.LxmlError, ValueError):
        return "the skeleton cannot be parsed"
    if _has_marker(tree.docinfo.doctype):
        return "a value in the doctype"
    root = tree.getroot()
    style_sheet = "".join(element.text or "" for element in root.iter() if element.tag == "style")
    contexts: dict[int, _Context] = {}

    def note(text: str, context: _Context) -> str | None:
        if _OPEN in _MARKER.sub("", text) or _CLOSE in _MARKER.sub("", text):
            return "a broken marker in the skeleton"
        for match in _MARKER.finditer(text):
            index = int(match.group(1))
            if index in contexts:
                return "a value written twice"
            contexts[index] = context
        return None

    for node in _nodes(tree):
        tag = node.tag
        parent = node.getparent()
        if _has_marker(node.tail):
            if parent is None or not isinstance(parent.tag, str):
                return "a value outside the root element"
            if parent.tag in _SPECIAL_TEXT_PARENTS:
                return f"a value inside <{parent.tag}>"
            if problem := note(node.tail, ("text", parent.tag, "")):
                return problem
        if not isinstance(tag, str):
            if _has_marker(node.text) or _has_marker(getattr(node, "target", None)):
                return "a value in a comment or processing instruction"
            continue
        if _has_marker(tag):
            return "a value in a tag name"
        if _has_marker(node.text):
            if tag in _SPECIAL_TEXT_PARENTS:
                return f"a value inside <{tag}>"
            if problem := note(node.text, ("text", tag, "")):
                return problem
        for name, value in node.attrib.items():
            if _has_marker(name):
                return "a value in an attribute name"
            if not _has_marker(value):
                continue
            if tag in _SPECIAL_ATTRIBUTE_ELEMENTS or name in _SPECIAL_ATTRIBUTES:
                return f"a value in the {name} attribute of <{tag}>"
            if "[" in style_sheet:
                return "a value in an attribute, and the style sheet selects attributes"
            if problem := note(value, ("attribute", tag, name)):
                return problem
    if sorted(contexts) != list(range(count)):
        return "a value not written once in the page"
    shape = _shape(stripped, tree)
    marked = tuple(i for i, item in enumerate(shape) if _has_marker(item))
    return _SkeletonPlan(
        contexts=tuple(contexts[i] for i in range(count)), shape=shape, marked=marked
    )


def _inline_plan(plan: _SkeletonPlan, skeleton: str) -> str | None:
    """Inline the skeleton once; None when its markers do not come out intact."""
    pieces = _MARKER.split(_inline_css_cached(skeleton))
    parts, order = tuple(pieces[0::2]), tuple(int(i) for i in pieces[1::2])
    if sorted(order) != list(range(len(plan.contexts))):
        return "a value not written once in the inlined page"
    if any(_OPEN in part or _CLOSE in part for part in parts):
        return "a broken marker in the inlined page"
    plan.parts, plan.order = parts, order
    return None


@functools.lru_cache(maxsize=8192)
def _written(context: _Context, value: str) -> str | None:
    """``value`` as lxml's HTML serialiser writes it where ``context`` says.

    None when it would not be written as plain text (or, in an attribute, as
    itself between double quotes), or lxml will not take it.
    """
    kind, tag, name = context
    if kind == "attribute" and not all(
        char.isalnum() or char in _ATTRIBUTE_PUNCTUATION for char in value
    ):
        return None
    try:
        page = etree.fromstring("<html><body></body></html>", etree.HTMLParser())
        element = etree.SubElement(page[0], tag)
        if kind == "text":
            element.text = value
        else:
            element.set(name, value)
        out = etree.tostring(element, method="html", encoding="utf-8").decode("utf-8")
    except (etree.LxmlError, ValueError, TypeError):
        return None
    if kind == "text":
        before, after = f"<{tag}>", f"</{tag}>"
        if out.startswith(before) and out.endswith(after) and len(out) >= len(before + after):
            return str(out[len(before) : len(out) - len(after)])
        return None
    written = f'<{tag} {name}="{value}"'
    return value if out in (f"{written}></{tag}>", f"{written}>") else None


def _wrap(line: str, width: int, break_long_words: bool, break_on_hyphens: bool) -> tuple[str, ...]:
    return tuple(
        textwrap.wrap(
            line,
            width=width,
            expand_tabs=False,
            replace_whitespace=False,
            break_long_words=break_long_words,
            break_on_hyphens=break_on_hyphens,
        )
    )


_wrapped_line = functools.lru_cache(maxsize=4096, typed=True)(_wrap)


@jinja2.pass_environment
def _wordwrap(
    environment: jinja2.Environment,
    s: str,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    """Jinja's ``wordwrap``, remembering how each line wraps.

    Most lines are the letter's own paragraphs, the same in every letter.
    The result is the built-in filter's, byte for byte. Only plain strings
    are remembered: a Markup line must come back as Markup.
    """
    if wrapstring is None:
        wrapstring = environment.newline_sequence
    return wrapstring.join(
        [
            wrapstring.join(
                (_wrapped_line if type(line) is str else _wrap)(
                    line, width, break_long_words, break_on_hyphens
                )
            )
            for line in s.splitlines()
        ]
    )


class Renderer:
    """Renders letters for contacts from one templates folder."""

    def __init__(self, templates_dir: Path, letter_date: str) -> None:
        if not templates_dir.is_dir():
            raise TemplateError(f"{templates_dir}: no such folder (set TEMPLATES_DIR)")
        self.templates_dir = templates_dir
        self.letter_date = letter_date
        self.data = load_data_files(templates_dir)
        self._environments: dict[str, SandboxedEnvironment] = {}
        self._skeleton_environments: dict[str, SandboxedEnvironment] = {}
        self._recorder = _Recorder()
        self._plans: OrderedDict[str, _SkeletonPlan | str] = OrderedDict()
        self.inline_stats = InlineStats()

    def warm(self) -> None:
        """Compile the templates before any letter.

        A worker process started before the contacts are read does this
        while they are read, so the first letter it gets is not slower than
        the rest. A template that does not compile is left for the first
        letter to report, with its contact.
        """
        for name in (SUBJECT, TEXT, HTML):
            with contextlib.suppress(jinja2.TemplateError):
                self.environment(DEFAULT_LANGUAGE).get_template(name)
        with contextlib.suppress(jinja2.TemplateError):
            self._skeleton_environment(DEFAULT_LANGUAGE).get_template(HTML)

    def language_for(self, contact: Contact) -> str:
        """The contact's language when its templates exist, else English."""
        language = contact.language
        if language != DEFAULT_LANGUAGE and (self.templates_dir / language).is_dir():
            return language
        return DEFAULT_LANGUAGE

    def environment(self, language: str) -> SandboxedEnvironment:
        if language not in self._environments:
            self._environments[language] = self._new_environment(language)
        return self._environments[language]

    def _skeleton_environment(self, language: str) -> SandboxedEnvironment:
        """The same environment, writing a marker for each escaped value."""
        if language not in self._skeleton_environments:
            self._skeleton_environments[language] = self._new_environment(
                language, finalize=_recording_finalize(self._recorder)
            )
        return self._skeleton_environments[language]

    def _new_environment(self, language: str, finalize: Any = None) -> SandboxedEnvironment:
        environment = _LimitedSandbox(
            loader=jinja2.FileSystemLoader([self.templates_dir / language, self.templates_dir]),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html", "htm", "xml", "html.j2"),
                default_for_string=False,
                default=False,
            ),
            keep_trailing_newline=True,
            auto_reload=False,
            finalize=finalize,
        )
        environment.filters["wordwrap"] = _wordwrap
        return environment

    def context(self, contact: Contact, language: str) -> dict[str, Any]:
        """What the templates see: data files, the date, then every column.

        ``letter_language`` is the language the letter is written in, which
        differs from the contact's ``language`` until its templates exist.
        """
        return {
            **self.data,
            "letter_date": self.letter_date,
            **contact.fields,
            "salutation": contact.fields.get("salutation", ""),
            "letter_language": language,
        }

    def render(self, contact: Contact) -> Rendered:
        language = self.language_for(contact)
        context = self.context(contact, language)
        subject = self._render(language, SUBJECT, context, contact).strip()
        if "\n" in subject or "\r" in subject:
            raise TemplateError(
                f"{self._path(language, SUBJECT)}: the subject must be one line "
                f"(contact {contact.id})"
            )
        text = self._render(language, TEXT, context, contact)
        html = self._render(language, HTML, context, contact)
        return Rendered(
            subject=subject,
            text=text,
            html=self._inline(language, context, html),
            language=language,
        )

    def _inline(self, language: str, context: Mapping[str, Any], html: str) -> str:
        """The HTML with its CSS inlined: from the shared skeleton when that
        provably gives the same bytes, else by inlining this letter in full."""
        outcome = self._from_skeleton(language, context, html)
        if outcome.startswith(_OPEN):
            self.inline_stats.shared += 1
            return outcome[1:]
        self.inline_stats.fell_back(outcome)
        return _inline_css(html)

    def _from_skeleton(self, language: str, context: Mapping[str, Any], html: str) -> str:
        """The inlined HTML after a marker character, or why there is none."""
        values: list[str] = []
        self._recorder.values = values
        try:
            skeleton = self._skeleton_environment(language).get_template(HTML).render(context)
        except Exception:  # the plain render succeeded; the full path is always right
            return "the skeleton cannot be rendered"
        finally:
            self._recorder.values = None
        if skeleton.count(_OPEN) != len(values) or skeleton.count(_CLOSE) != len(values):
            return "a marker character in the template or in markup"
        if any(_UNSAFE_VALUE.search(value) for value in values):
            return "a value holds a control or marker character"
        plan = self._plan(skeleton, len(values))
        if isinstance(plan, str):
            return plan
        try:
            stripped, tree = _parse(html)
        except (etree.LxmlError, ValueError):
            return "the page cannot be parsed"
        expected = list(plan.shape)
        for position in plan.marked:
            expected[position] = _MARKER.sub(
                lambda match: values[int(match.group(1))], str(expected[position])
            )
        if expected != _shape(stripped, tree):
            return "the page parses differently with the values in place"
        written = [
            _written(where, value) for where, value in zip(plan.contexts, values, strict=True)
        ]
        if None in written:
            return "a value lxml would not write as it is"
        if plan.parts is None:
            self.inline_stats.skeletons += 1
            if problem := _inline_plan(plan, skeleton):
                self._plans[skeleton] = problem
                return problem
        assert plan.parts is not None
        pieces = [plan.parts[0]]
        for index, part in zip(plan.order, plan.parts[1:], strict=True):
            pieces += (written[index] or "", part)
        return _OPEN + "".join(pieces)

    def _plan(self, skeleton: str, count: int) -> _SkeletonPlan | str:
        plan = self._plans.get(skeleton)
        if plan is None:
            plan = self._plans[skeleton] = _plan_skeleton(skeleton, count)
            if len(self._plans) > _PLAN_CACHE_SIZE:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(skeleton)
        return plan

    def _path(self, language: str, name: str) -> Path:
        own = self.templates_dir / language / name
        return own if own.exists() else self.templates_dir / name

    def _render(
        self, language: str, name: str, context: Mapping[str, Any], contact: Contact
    ) -> str:
        try:
            template = self.environment(language).get_template(name)
            return template.render(context)
        except jinja2.TemplateNotFound as err:
            # err.name is the template that is missing, which may be one that
            # this one includes or extends.
            missing = err.name or name
            raise TemplateError(
                f"{self.templates_dir / language / missing}: missing "
                f"(looked in {self.templates_dir / language} and {self.templates_dir})"
            ) from err
        except jinja2.TemplateSyntaxError as err:
            raise TemplateError(
                f"{err.filename or name}, line {err.lineno}: {err.message}"
            ) from err
        except SecurityError as err:
            raise TemplateError(
                f"{_template_position(err, name)}: not allowed in a template ({err})"
            ) from err
        except jinja2.UndefinedError as err:
            raise TemplateError(
                f"{_template_position(err, name)}: {err.message} ("
                "the variables are the contacts columns, letter_date, letter_language, "
                "salutation and "
                f"{', '.join(self.data) or 'no data files'})"
            ) from err
        except jinja2.TemplateError as err:
            raise TemplateError(f"{_template_position(err, name)}: {err}") from err
        except (ArithmeticError, TypeError, ValueError, LookupError) as err:
            # A mistake in the template's own expressions ({{ 1 / 0 }},
            # {{ 'a' + 1 }}): the person editing it needs the place, not a traceback.
            raise TemplateError(
                f"{_template_position(err, name)}: {type(err).__name__}: {err}"
            ) from err


#: What ``getattr`` finds on a dict: the attributes of its type, and no others.
_DICT_ATTRIBUTES = frozenset(dir(dict))

#: Longest string or list a template expression may build with ``*``.
MAX_REPEAT = 1_000_000


class _LimitedSandbox(SandboxedEnvironment):
    """The sandbox, with ``*`` and ``**`` bounded.

    Jinja2's sandbox keeps templates away from Python's internals but lets
    ``{{ 'a' * 10**9 }}`` or ``{{ 9 ** 9 ** 9 }}`` run until memory or
    patience runs out; a template edited by hand must fail fast instead.
    """

    intercepted_binops = frozenset(["*", "**"])

    def getattr(self, obj: Any, attribute: str) -> Any:
        # ``row.name`` on a row of a data file (a plain dict): Jinja2 first
        # asks the dict for an attribute, and raising and catching that
        # AttributeError was a tenth of the cost of rendering a letter. A dict
        # has no attribute but those of its type, so the item can be looked
        # up at once; every other case keeps the sandbox's own lookup.
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int) and abs(right) > 1000:
                raise SecurityError(f"the power {right} is too large")
            return left**right
        for sequence, count in ((left, right), (right, left)):
            if (
                isinstance(sequence, str | list | tuple)
                and isinstance(count, int)
                and len(sequence) * count > MAX_REPEAT
            ):
                raise SecurityError(
                    f"repeating a value {count} times would make it longer "
                    f"than {MAX_REPEAT:,} characters"
                )
        return left * right


def _template_position(err: BaseException, fallback: str) -> str:
    """'file, line N' of the template frame an error was raised in.

    Jinja2 rewrites tracebacks so that template frames carry the template's
    own file name and line, which is what the person editing it needs.
    """
    frames = [
        frame for frame in traceback.extract_tb(err.__traceback__) if frame.filename.endswith(".j2")
    ]
    if not frames:
        return fallback
    return f"{frames[-1].filename}, line {frames[-1].lineno}"
