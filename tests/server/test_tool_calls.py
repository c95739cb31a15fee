"""Tool-call parsing (whole and streamed) and tool rendering through a template with `tools`."""

from __future__ import annotations

import json

import pytest

from localseek.server.tool_calls import ToolCallStream, parse_tool_calls
from localseek.server.tool_prompt import prepare_tool_messages
from localseek.weights.tokenizer import Tokenizer

ARGS = {"city": "Paris", "days": 2}
HERMES = f'Let me check.\n<tool_call>\n{{"name": "weather", "arguments": {json.dumps(ARGS)}}}\n</tool_call>'
DEEPSEEK_V3 = (
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>weather\n```json\n"
    f"{json.dumps(ARGS)}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
)
DEEPSEEK_V31 = (
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>weather<｜tool▁sep｜>"
    f"{json.dumps(ARGS)}<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
)


@pytest.mark.parametrize("text", [HERMES, DEEPSEEK_V3, DEEPSEEK_V31], ids=["hermes", "v3", "v31"])
def test_each_format_parses_to_a_call_with_json_string_arguments(text):
    parsed = parse_tool_calls(text)
    (call,) = parsed.calls
    assert call.function.name == "weather" and json.loads(call.function.arguments) == ARGS
    assert parsed.content == ("Let me check." if text is HERMES else None)


def test_two_hermes_calls_and_plain_text():
    two = HERMES + '\n<tool_call>{"name": "time", "arguments": {}}</tool_call>'
    assert [c.function.name for c in parse_tool_calls(two).calls] == ["weather", "time"]
    assert parse_tool_calls("just words").calls == []
    broken = "<tool_call>{not json</tool_call>"
    assert parse_tool_calls(broken).content == broken and not parse_tool_calls(broken).calls


def test_forced_answer_is_one_json_object():
    (call,) = parse_tool_calls(json.dumps({"name": "w", "arguments": ARGS}), forced=True).calls
    assert json.loads(call.function.arguments) == ARGS


@pytest.mark.parametrize("cut", [1, 3, 7, 11, 12, 30])
def test_streamed_content_stops_at_the_marker_even_split_across_deltas(cut):
    stream = ToolCallStream(forced=False)
    shown = stream.feed(HERMES[:cut]) + stream.feed(HERMES[cut:])
    tail, calls = stream.finish()
    assert shown + tail == "Let me check.\n"
    assert [c.function.name for c in calls] == ["weather"]


def test_stream_without_a_call_returns_all_text_and_a_false_start_is_content():
    stream = ToolCallStream(forced=False)
    text = "a <tool_cal"
    shown = stream.feed(text)
    tail, calls = stream.finish()
    assert shown + tail == text and calls == []


QWEN_LIKE = (
    "{% if tools %}<|system|>tools:{% for t in tools %}{{ t.function.name }};{% endfor %}\n"
    "{% endif %}{% for m in messages %}"
    "{% if m.role == 'assistant' and m.tool_calls %}<|assistant|>"
    "{% for c in m.tool_calls %}call {{ c.function.name }} {{ c.function.arguments | tojson }}"
    "{% endfor %}\n"
    "{% elif m.role == 'tool' %}<|user|>result: {{ m.content }}\n"
    "{% else %}<|{{ m.role }}|>{{ m.content }}\n{% endif %}{% endfor %}"
)


def test_a_template_that_reads_tools_gets_them_and_dict_arguments(tmp_path):
    from tiny_tokenizer import save_tiny_tokenizer

    tok = Tokenizer.from_pretrained_dir(save_tiny_tokenizer(tmp_path, chat_template=QWEN_LIKE))
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    history = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": json.dumps(ARGS)},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    messages, tool_defs = prepare_tool_messages(history, tools, template_reads_tools=True)
    text = tok.apply_chat_template(messages, tools=tool_defs, add_generation_prompt=False)
    assert "tools:weather;" in text
    assert f"call weather {json.dumps(ARGS)}" in text  # arguments as a dict, not a string
    assert "result: sunny" in text


def test_the_fallback_lists_tools_in_a_system_message_and_writes_history_as_text():
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    history = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "rain"},
    ]
    messages, tool_defs = prepare_tool_messages(history, tools, template_reads_tools=False)
    assert tool_defs is None
    assert (
        messages[0]["content"].startswith("Be brief.")
        and '"name":"weather"' in messages[0]["content"]
    )
    assert (
        messages[1]["content"]
        == '<tool_call>{"name": "weather", "arguments": {"city": "Rome"}}</tool_call>'
    )
    assert messages[2] == {"role": "user", "content": "<tool_response>rain</tool_response>"}
