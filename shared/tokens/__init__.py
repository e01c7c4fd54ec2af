"""Token counting the way OpenAI's fine-tuning cookbook bills chat examples.

tiktoken needs its BPE files; offline they are read from the folder named by `TIKTOKEN_CACHE_DIR`.
The count is the cookbook's estimate ("not exact!"), which is also what the quote is built on:
3 tokens per message, the tokens of every string value (the role included), 1 more per `name`,
and 3 for the reply priming.

DPO examples (`{"input": {"messages"}, "preferred_output", "non_preferred_output"}`) are counted as
one conversation: the input messages followed by both outputs, each message the chat way, with the
reply priming once. OpenAI bills DPO per training token but publishes no counting rule; the prompt
is shared by the pair, so it is counted once, and each output costs what an assistant message costs
in a chat example, which keeps DPO and chat quotes comparable. (If the provider runs the prompt
once per output, the real figure is higher by the input's tokens; the quote is an estimate, like
the cookbook's.)

Modules: encodings (model → encoding), backends (tiktoken's ways to count), probes and fast (the
optional exact fast tokenizer, checked against tiktoken), selection (which backend, how many
threads), cache (bounded string-length cache), counting (the cookbook's rule), batches (many
examples over threads).
"""

from __future__ import annotations

from shared.tokens.batches import ExampleCounter, Submitted, Ticket
from shared.tokens.cache import TokenLengths, token_lengths
from shared.tokens.counting import (
    REPLY_PRIMING_TOKENS,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME,
    count_chat_tokens,
    count_example_tokens,
    count_text_tokens,
    count_training_example,
    example_messages_for_stats,
    example_parts,
    example_token_upper_bound,
    training_example_token_upper_bound,
)
from shared.tokens.encodings import (
    DEFAULT_ENCODING,
    base_model_name,
    encoding_for_model,
    encoding_name_for_model,
    get_encoding,
)
from shared.tokens.fast import fast_backend
from shared.tokens.selection import TOKENIZERS, default_threads, tokenizer_backend

__all__ = [
    "DEFAULT_ENCODING",
    "ExampleCounter",
    "REPLY_PRIMING_TOKENS",
    "Submitted",
    "TOKENIZERS",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_NAME",
    "Ticket",
    "TokenLengths",
    "base_model_name",
    "count_chat_tokens",
    "count_example_tokens",
    "count_text_tokens",
    "count_training_example",
    "default_threads",
    "encoding_for_model",
    "encoding_name_for_model",
    "example_messages_for_stats",
    "example_parts",
    "example_token_upper_bound",
    "fast_backend",
    "get_encoding",
    "token_lengths",
    "tokenizer_backend",
    "training_example_token_upper_bound",
]
