"""Tiny byte-level BPE tokenizer (+ HF chat templates) saved to a directory, for tests.

Trained with the `tokenizers` library on a small built-in corpus of English, Chinese, emoji and
code, so real byte-level behaviour shows up (a Chinese character or an emoji split across
tokens). The result is the same file every time. `transformers.AutoTokenizer` loads the directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

BOS = "<s>"
EOS = "</s>"
SPECIAL_TOKENS = [BOS, EOS, "<|system|>", "<|user|>", "<|assistant|>"]
# Reasoning markers are added tokens that are *not* special, as in DeepSeek-R1 and Qwen3:
# decode(skip_special_tokens=True) keeps them, so the server can split reasoning from content.
THINK_TOKENS = ["<think>", "</think>"]
VOCAB_SIZE = 448  # BPE vocab + THINK_TOKENS; fits a tiny model's vocab_size=512

# Plain HF-style template: BOS, then role markers; assistant turns end with EOS.
DEFAULT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '<|system|>' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ '<|user|>' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>' + message['content'] + eos_token + '\\n' }}"
    "{% else %}"
    "{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

# DeepSeek-R1 style: earlier assistant turns lose their reasoning, and the generation prompt
# opens a <think> block so the model's first output tokens are reasoning.
R1_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ message['content'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ '<|user|>' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<|assistant|>' + content + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|><think>\\n' }}{% endif %}"
)

DEFAULT = DEFAULT_TEMPLATE

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How are you today? I am fine, thank you.",
    "Self-hosted serving keeps every request answered, even when the cloud is busy.",
    "The model generates tokens one at a time; the cache stores keys and values.",
    "Please explain the difference between a process and a thread.",
    "你好，世界！今天天气很好。",
    "我们在本地运行模型，每个请求都会得到回答。",
    "深度求索的模型会先思考，然后回答问题。",
    "中文和英文混合的句子：the model 说 hello。",
    "😀 😃 🚀 🎉 👍 ❤️ 🔥 ✨ 🤖 🧠",
    "Emoji in text 🚀 launch, 🎉 party, 🤖 robot.",
    "def add(a: int, b: int) -> int:\n    return a + b\n",
    "for i in range(10):\n    print(i * i)\n",
    "import torch\nx = torch.zeros(4, 8)\nprint(x.shape)\n",
    'if __name__ == "__main__":\n    main()\n',
    "const f = (x) => { return x + 1; };",
    "SELECT id, name FROM users WHERE age > 30;",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024",
]


def build_tokenizer() -> Tokenizer:
    """Train the tiny byte-level BPE (deterministic: same corpus, same trainer settings)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(THINK_TOKENS),
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 3, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tok


def save_tiny_tokenizer(
    directory: Path,
    *,
    chat_template: str | None = DEFAULT,
    add_bos_token: bool = True,
) -> Path:
    """Write tokenizer.json and tokenizer_config.json into `directory`; returns `directory`.

    `chat_template=None` writes no template (to test the "no chat template" error);
    `add_bos_token=False` makes a Qwen-style tokenizer that adds no BOS.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    bos_id = tok.token_to_id(BOS)
    if add_bos_token:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.save(str(directory / "tokenizer.json"))
    config: dict = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "add_bos_token": add_bos_token,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return directory
