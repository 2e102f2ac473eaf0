"""Causal-LM data: the formats a user's rows come in, and their encoding for training.

Reading rows is `rows`, chat templates and rendering `chat_template`, tokenising and
label masking `encoding`; what callers use is imported from here.

Formats (`Recipe.data_format`; `auto` picks the first whose columns are present):
- `messages`: a list of {role, content} turns in `messages_column` (ShareGPT's
  {from, value} turns too, and its "conversations" column when the default "messages"
  is absent);
- `prompt-response`: `prompt_column` and `response_column` (auto and an absent default
  "response" column also accept "completion"): two texts, or TRL's conversational
  prompt-completion (the prompt's turns, then the completion's assistant turns);
- `instruction`: the conventional `instruction`, optional `input` and `output` columns
  (the user turn is the instruction, then a blank line and the input when there is one);
- `text`: one document per row in `text_column` (the fallback, and the embedded BBC News).
The last three conversational formats become one user/assistant turn each. Roles are
read in lower case, and `model` (Gemma's name) as `assistant`. An assistant turn's
`weight` (OpenAI's fine-tuning format: 0 or 1, default 1) says whether it is trained:
a weight-0 reply is context only; a weight on another role's turn, any other value, or
a conversation whose every reply has weight 0 is a `DataError`. Other keys of a turn
(OpenAI's `name`, `tool_calls`, ...) are not read: one warning per split names them.
A `text_column` other than the default "text" is an explicit choice: `auto` then
reads text. Every malformed row raises `DataError` naming the row, with a hint.

Encoding (`encode_lm`), what training relies on:
- text, packed (`packing`, the default): every document is tokenized, followed by one
  EOS (a tokenizer that appends its own gets no second), concatenated in row order and
  cut into `max_length` blocks; no token is lost but the final partial block (a warning
  when it holds >= 1% of the tokens); every token carries a label.
- text, one example per row: the document plus EOS, truncated to `max_length`.
- conversations, one example per row, truncated to `max_length`: rendered with the
  tokenizer's chat template when it has one (else "content\\n" per turn and
  content + EOS for the assistant's, no EOS a tokenizer appends after that, logged as a
  warning); only the assistant turns'
  tokens, through the end-of-turn text that closes each one (EOS, or the template's
  own end-of-turn token such as <|im_end|> when EOS is another; not the template's
  text after it), carry labels. The ids are the tokenization of the whole rendered
  text; a token is trained when its characters overlap a reply (a fast tokenizer's
  offsets: a token the template and the reply share at their boundary is trained),
  or, without offsets, by counting the tokens of the text before and through each
  reply (a `DataError` when those are not a prefix of the whole). A conversation with no
  trained token within `max_length` stays a row without labels (rows stay aligned
  with the dataset) that the trainer skips; if none has one, `DataError`.
- truncation is never silent: one warning per dataset counts the rows cut and the share
  of tokens (and of trained tokens) dropped.
- padding never carries a label (labels are -100 wherever no loss is taken).
- the tensors are compact and read-only: ids and labels int32 (`IDS`), the mask int8
  (`MASK`); packed text's labels are its ids tensor and its mask one expanded row.
  Models take int64 (`Encoded.inputs` converts a batch).

`render_prompt`/`encode_prompt` render a conversation for generation the way training
rendered it.
"""

from declora.node.lm_data.chat_template import (
    encode_prompt,
    encode_text,
    end_of_turn_id,
    render_prompt,
    special_tokens_in,
    stop_token_ids,
)
from declora.node.lm_data.encoding import IGNORE, encode_lm
from declora.node.lm_data.rows import (
    CONVERSATIONS,
    ROLE_ALIASES,
    SHAREGPT_ROLES,
    LmFormat,
)

__all__ = [
    "CONVERSATIONS",
    "IGNORE",
    "ROLE_ALIASES",
    "SHAREGPT_ROLES",
    "LmFormat",
    "encode_lm",
    "encode_prompt",
    "encode_text",
    "end_of_turn_id",
    "render_prompt",
    "special_tokens_in",
    "stop_token_ids",
]
