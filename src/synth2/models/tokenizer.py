"""A word-level tokenizer for the shapes world, built locally with `tokenizers` and wrapped for transformers.

Each word is one token, so the caption LM spends no capacity on spelling. Spacing is kept exactly the way
SentencePiece keeps it: the Metaspace pre-tokenizer marks a word that follows a space with "▁", and
punctuation is split off as its own token *without* the mark. Decoding concatenates the tokens and turns
"▁" back into a space, so `decode(encode(text)) == text` for any normalised text:

    "concepts: red star caption:"  ->  ▁concepts  :  ▁red  ▁star  ▁caption  :
    "a red star, left-of a disc."  ->  ▁a ▁red ▁star , ▁left - of ▁a ▁disc .

(A plain Whitespace pre-tokenizer would decode as "caption :" and break exact-match metrics.)

The wrapper is a `PreTrainedTokenizerFast` with <pad>/<unk>/<bos>/<eos> set; it saves with
`save_pretrained` and loads back with `AutoTokenizer.from_pretrained(path)` offline. Encoding prepends
<bos> (as Llama's tokenizer does); <eos> is never added automatically, so a prompt tokenised for
generation is not closed before the model continues it. Training code appends `eos_token_id` itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)  # ids 0..3 in this order
_SPACE_MARK = "▁"


def build_tokenizer(
    texts: Iterable[str], min_frequency: int = 1, control_tokens: Iterable[str] = ()
) -> PreTrainedTokenizerFast:
    """Build a word-level tokenizer whose vocabulary is every word and punctuation mark in `texts`.

    Pass the prompt words too (render the prompt templates once into `texts`), or "concepts:" and
    "caption:" become <unk>. `control_tokens` (e.g. "<human>") become single special tokens after the
    four of SPECIAL_TOKENS: matched whole in any text, never split, dropped by `skip_special_tokens`.
    """
    control_tokens = list(control_tokens)
    backend = Tokenizer(models.WordLevel(unk_token=UNK))
    backend.normalizer = normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.Lowercase(),
            # Collapse runs of whitespace: a double space would otherwise become an unknown bare "▁".
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Strip(),
        ]
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=_SPACE_MARK, prepend_scheme="always", split=True),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )
    backend.decoder = decoders.Metaspace(replacement=_SPACE_MARK, prepend_scheme="always", split=True)
    trainer = trainers.WordLevelTrainer(special_tokens=[*SPECIAL_TOKENS, *control_tokens], min_frequency=min_frequency)
    backend.train_from_iterator(texts, trainer)
    bos_id = backend.token_to_id(BOS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        # The Metaspace decoder already restores spacing; HF's clean-up would also rewrite " 's" etc.
        clean_up_tokenization_spaces=False,
        additional_special_tokens=control_tokens,
    )
