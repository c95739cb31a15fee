"""Tokenizer: a `tokenizers.Tokenizer` plus the model's special tokens and chat template.

Encoding, decoding and chat-template rendering match `transformers` on the same directory
(tests compare them), without importing transformers at serving time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.meta
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import processors

from localseek.errors import InvalidRequestError, ModelLoadError

logger = logging.getLogger(__name__)

NO_TEMPLATE_MESSAGE = "model has no chat template; use /v1/completions or pass --chat-template"
# Appended to the final message when continuing it; everything from it on is cut after rendering.
# The trailing space tells whether the template stripped the message: then the cut text is
# right-stripped too, as transformers does.
_CONTINUE_MARKER = "\x00LOCALSEEK_CONTINUE\x00 "


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}…{% endgeneration %}` (HF assistant-mask templates): renders its body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller: Any) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson HTML-escapes `<`, `>`, `&`; HF templates expect plain JSON.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _template_environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def compile_chat_template(source: str) -> jinja2.Template:
    """Compile a chat template in the sandboxed environment HF templates are written for."""
    return _template_environment().from_string(source)


def template_variables(source: str) -> frozenset[str]:
    """Names a chat template reads from its context (e.g. `enable_thinking`, `tools`)."""
    return frozenset(jinja2.meta.find_undeclared_variables(_template_environment().parse(source)))


def read_chat_template(value: str) -> str:
    """A --chat-template value: a path to a .jinja/.json file, or the template text itself."""
    path = Path(value)
    try:
        is_file = len(value) < 4096 and path.is_file()
    except OSError:  # e.g. a template too long to be a file name
        is_file = False
    if not is_file:
        return value
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return _template_from_config_value(json.loads(text).get("chat_template")) or ""
    return text


def _template_from_config_value(value: Any) -> str | None:
    # tokenizer_config.json holds either one template or a list of named ones.
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
        return named.get("default") or next(iter(named.values()), None)
    raise ModelLoadError(f"chat_template must be a string or a list of templates, got {value!r}")


def _token_content(value: Any) -> str | None:
    # Special tokens are stored as "<s>" or as a serialized AddedToken {"content": "<s>", ...}.
    if isinstance(value, dict):
        return value.get("content")
    return value


def _extra_eos_ids(path: Path) -> list[int]:
    """End-of-sequence ids beyond the tokenizer's eos_token: generation_config.json's (what
    transformers' generate stops on), else config.json's."""
    for name in ("generation_config.json", "config.json"):
        if (path / name).is_file():
            eos = _read_json(path / name).get("eos_token_id")
            if eos is not None:
                return [eos] if isinstance(eos, int) else [int(t) for t in eos]
    return []


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc


class Tokenizer:
    """Text <-> token ids, special tokens, and chat-template rendering for one model."""

    def __init__(
        self,
        tokenizer: HFTokenizer,
        *,
        chat_template: str | None = None,
        bos_token: str | None = None,
        eos_token: str | None = None,
        extra_eos_token_ids: Iterable[int] = (),
        template_tokens: dict[str, str] | None = None,
    ):
        self._tok = tokenizer
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.bos_token_id = tokenizer.token_to_id(bos_token) if bos_token else None
        eos_ids = set(int(t) for t in extra_eos_token_ids)
        if eos_token and tokenizer.token_to_id(eos_token) is not None:
            eos_ids.add(tokenizer.token_to_id(eos_token))
        self.eos_token_ids: frozenset[int] = frozenset(eos_ids)
        added = tokenizer.get_added_tokens_decoder()  # {id: AddedToken}
        self.all_special_ids: frozenset[int] = frozenset(i for i, t in added.items() if t.special)
        self.vocab_size: int = max(
            [tokenizer.get_vocab_size(with_added_tokens=True), *(i + 1 for i in added)]
        )
        # Names templates read besides messages: bos_token, eos_token, unk_token, pad_token...
        self._template_tokens = {"bos_token": bos_token or "", "eos_token": eos_token or ""}
        self._template_tokens.update(template_tokens or {})
        self.chat_template: str | None = None
        self._template: jinja2.Template | None = None
        if chat_template:
            self.set_chat_template(chat_template)

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def from_pretrained_dir(cls, path: str | Path) -> Tokenizer:
        """Load tokenizer.json, tokenizer_config.json, chat_template.{jinja,json} and
        generation_config.json (extra eos ids) from an HF model directory."""
        path = Path(path)
        tok_file = path / "tokenizer.json"
        if not tok_file.is_file():
            raise ModelLoadError(
                f"no tokenizer.json in {path}; localseek needs a fast (tokenizers) tokenizer file"
            )
        try:
            tok = HFTokenizer.from_file(str(tok_file))
        except Exception as exc:  # the Rust library raises a plain Exception on a bad file
            raise ModelLoadError(f"cannot load {tok_file}: {exc}") from exc
        config = (
            _read_json(path / "tokenizer_config.json")
            if (path / "tokenizer_config.json").is_file()
            else {}
        )
        template = _template_from_config_value(config.get("chat_template"))
        if (path / "chat_template.json").is_file():
            template = _template_from_config_value(
                _read_json(path / "chat_template.json").get("chat_template")
            )
        if (path / "chat_template.jinja").is_file():
            template = (path / "chat_template.jinja").read_text(encoding="utf-8")
        # As transformers: the tokenizer.json post-processor decides BOS/EOS when it has one; the
        # config's add_bos_token/add_eos_token only fill in for a tokenizer.json without one.
        has_post = tok.post_processor is not None
        eos_ids = _extra_eos_ids(path)
        return cls.from_tokenizers(
            tok,
            chat_template=template,
            bos_token=_token_content(config.get("bos_token")),
            eos_token=_token_content(config.get("eos_token")),
            add_bos_token=None if has_post else bool(config.get("add_bos_token")),
            add_eos_token=None if has_post else bool(config.get("add_eos_token")),
            eos_token_ids=eos_ids,
            template_tokens={
                name: _token_content(config[name])
                for name in ("unk_token", "pad_token")
                if isinstance(_token_content(config.get(name)), str)
            },
        )

    @classmethod
    def from_tokenizers(
        cls,
        tok: HFTokenizer,
        *,
        chat_template: str | None = None,
        bos_token: str | int | None = None,
        eos_token: str | int | None = None,
        add_bos_token: bool | None = None,
        add_eos_token: bool | None = None,
        eos_token_ids: Iterable[int] = (),
        template_tokens: dict[str, str] | None = None,
    ) -> Tokenizer:
        """Wrap an in-memory `tokenizers.Tokenizer` (the GGUF loader builds one).

        bos/eos may be given as token text or id. When `add_bos_token`/`add_eos_token` is set
        (or the tokenizer has no post-processor), the post-processor is rebuilt to add exactly
        those, as transformers does; otherwise the tokenizer's own post-processor decides.
        """
        bos = tok.id_to_token(bos_token) if isinstance(bos_token, int) else bos_token
        eos = tok.id_to_token(eos_token) if isinstance(eos_token, int) else eos_token
        if add_bos_token is not None or add_eos_token is not None or tok.post_processor is None:
            _set_post_processor(tok, bos if add_bos_token else None, eos if add_eos_token else None)
        return cls(
            tok,
            chat_template=chat_template,
            bos_token=bos,
            eos_token=eos,
            extra_eos_token_ids=eos_token_ids,
            template_tokens=template_tokens,
        )

    def set_chat_template(self, template: str) -> None:
        """Use `template` (e.g. from --chat-template) instead of the model's own."""
        try:
            self._template = compile_chat_template(template)
        except jinja2.TemplateSyntaxError as exc:
            raise ModelLoadError(
                f"chat template does not compile: {exc} (line {exc.lineno})"
            ) from exc
        self.chat_template = template

    # ---- text <-> ids ---------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def backend(self) -> HFTokenizer:
        """The wrapped `tokenizers.Tokenizer`."""
        return self._tok

    # ---- chat -----------------------------------------------------------------------------

    def apply_chat_template(
        self,
        messages: list[dict],
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        *,
        tools: list[dict] | None = None,
        **template_kwargs: Any,
    ) -> str:
        """Render a conversation to prompt text, as transformers' `apply_chat_template(tokenize=False)`.

        `continue_final_message` leaves the last message open (DeepSeek's "prefix": true
        completion): the text ends where that message's content ends, and no generation prompt
        is added. Extra keyword arguments reach the template (e.g. `enable_thinking`).
        """
        if self._template is None:
            raise InvalidRequestError(NO_TEMPLATE_MESSAGE, param="messages")
        if not messages:
            raise InvalidRequestError("messages must not be empty", param="messages")
        messages = [dict(m) for m in messages]  # never change the caller's messages
        if continue_final_message:
            add_generation_prompt = False
            messages[-1] = _with_marker(messages[-1])
        context = {**self._template_tokens, **template_kwargs}
        try:
            text = self._template.render(
                messages=messages,
                tools=tools,
                add_generation_prompt=add_generation_prompt,
                **context,
            )
        except jinja2.TemplateError as exc:
            # raise_exception() in templates rejects conversations (e.g. roles not alternating).
            raise InvalidRequestError(
                f"chat template rejected the messages: {exc}", param="messages"
            ) from exc
        if continue_final_message:
            text = _cut_at_marker(text)
        return text


def _with_marker(message: dict) -> dict:
    # Mark the end of the last message's text so the rendered prompt can be cut right there.
    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": content + _CONTINUE_MARKER}
    if isinstance(content, list):
        parts = [dict(p) if isinstance(p, dict) else p for p in content]
        for part in reversed(parts):
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                part["text"] += _CONTINUE_MARKER
                return {**message, "content": parts}
    raise InvalidRequestError("the final message has no text content to continue", param="messages")


def _cut_at_marker(text: str) -> str:
    cut = text.rfind(_CONTINUE_MARKER.rstrip())
    if cut < 0:
        raise InvalidRequestError(
            "cannot continue the final message: the chat template does not render it",
            param="messages",
        )
    if text.startswith(_CONTINUE_MARKER, cut):
        return text[:cut]
    return text[:cut].rstrip()


def _set_post_processor(tok: HFTokenizer, bos: str | None, eos: str | None) -> None:
    """Make encode(add_special_tokens=True) add exactly `bos` in front and `eos` at the end."""
    single = "$A:0"
    pair_b = "$B:1"
    special: list[tuple[str, int]] = []
    for token, position in ((bos, "front"), (eos, "back")):
        if token is None:
            continue
        token_id = tok.token_to_id(token)
        if token_id is None:
            raise ModelLoadError(f"special token {token!r} is not in the tokenizer's vocabulary")
        special.append((token, token_id))
        if position == "front":
            single, pair_b = f"{token}:0 {single}", f"{token}:1 {pair_b}"
        else:
            single, pair_b = f"{single} {token}:0", f"{pair_b} {token}:1"
    tok.post_processor = processors.TemplateProcessing(
        single=single, pair=f"{single} {pair_b}", special_tokens=special
    )
