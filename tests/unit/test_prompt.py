from flashlive.generation.prompt import (
    Message,
    PlainFormatter,
    TemplateFormatter,
    ToolCall,
    ToolSpec,
)

CHATML = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_plain_formatter_writes_a_dialogue_ending_with_the_assistant_cue() -> None:
    rendered = PlainFormatter().render(
        [
            Message("system", "Answer in one word."),
            Message("user", "Capital of France?"),
            Message("assistant", "Paris."),
            Message("user", "And of Spain?"),
        ],
        [],
    )
    assert rendered.text.endswith(
        "User: Capital of France?\nAssistant: Paris.\n\nUser: And of Spain?\nAssistant:"
    )
    assert "Answer in one word." in rendered.text
    assert "\nUser:" in rendered.stop


def test_plain_formatter_describes_tools_and_renders_calls() -> None:
    tools = [ToolSpec("get_weather", "Weather for a city", {"type": "object"})]
    rendered = PlainFormatter().render(
        [
            Message("user", "Weather in Rome?"),
            Message("assistant", tool_calls=(ToolCall("get_weather", {"city": "Rome"}),)),
            Message("tool", '{"temp": 20}', name="get_weather"),
        ],
        tools,
    )
    assert '"name": "get_weather"' in rendered.text
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>' in (
        rendered.text
    )
    assert "(result of get_weather)" in rendered.text


def test_template_without_tool_support_gets_tools_in_the_system_message() -> None:
    formatter = TemplateFormatter(CHATML, bos_token="<s>", eos_token="</s>")
    tools = [ToolSpec("f", "does f", {"type": "object"})]
    rendered = formatter.render([Message("user", "hi")], tools)
    assert rendered.text.startswith("<|system|>You may call these functions")
    assert rendered.text.endswith("<|user|>hi\n<|assistant|>")
