"""Tokenizers (bytes; a checkpoint folder's own with its chat template) and ``openm1 generate``."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from openm1.cli import main
from openm1.generate.loading import load_model
from openm1.generate.tokenizer import ByteTokenizer, HFTokenizer, IncrementalDetokenizer


def test_byte_tokenizer_round_trips_text_and_specials():
    tok = ByteTokenizer(512)
    text = "héllo <think>wörld</think> ✓</s>"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ids.count(tok.special_ids["<think>"]) == 1 and ids[-1] == tok.eos_token_ids[0]
    with pytest.raises(ValueError, match="at least 261"):
        ByteTokenizer(256)


def test_incremental_detokenizer_never_splits_a_character():
    tok = ByteTokenizer(512)
    ids = tok.encode("a✓b€")
    detok = IncrementalDetokenizer(tok.decode)
    pieces = [detok.push(i) for i in ids]
    assert "".join(pieces) == "a✓b€"
    assert pieces[1:4] == ["", "", "✓"]  # three bytes, one character


def _byte_level_hf_tokenizer():
    """A small byte-level BPE tokenizer built in memory (no download), with a chat template."""
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    tk = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = tokenizers.decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="</s>", bos_token="<s>", pad_token="<pad>")
    hf.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    hf.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant: <think>{% endif %}"
    )
    return hf


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    pytest.importorskip("transformers")
    from openm1.config import preset
    from openm1.model import MiniMaxM1ForCausalLM

    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny rotates part of the head; save() warns about transformers
        MiniMaxM1ForCausalLM(preset("tiny")).save_pretrained(folder)
    _byte_level_hf_tokenizer().save_pretrained(folder)
    return folder


def test_checkpoint_folder_brings_its_tokenizer_and_chat_template(checkpoint):
    model, tok, name = load_model(str(checkpoint), device="cpu")
    assert isinstance(tok, HFTokenizer) and name == checkpoint.name
    ids = tok.chat_prompt([{"role": "user", "content": "hi ✓"}])
    text = tok.decode(ids)
    assert text == "<s>user: hi ✓</s><s>assistant: <think>"
    assert tok.eos_token_ids == [tok.tok.convert_tokens_to_ids("</s>")]


def test_generate_command_streams_and_reports_speed(checkpoint, capsys):
    assert main(["generate", "tiny", "Hello", "--max-new-tokens", "6", "--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    assert "tokens/s" in err and "finish: length" in err
    assert main(["generate", str(checkpoint), "hi", "--chat", "--max-new-tokens", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["token_ids"]) == 4 and result["finish_reason"] == "length"


def test_generate_command_reads_jsonl_and_names_bad_lines(tmp_path, capsys):
    good = tmp_path / "p.jsonl"
    good.write_text(
        '{"prompt": "a", "max_new_tokens": 3}\n"plain"\n{"messages": [{"role": "user", "content": "b"}]}\n'
    )
    assert main(["generate", "tiny", "--file", str(good), "--max-new-tokens", "2", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [len(x["token_ids"]) for x in lines] == [3, 2, 2]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"prompt": \n')
    assert main(["generate", "tiny", "--file", str(bad)]) == 2
    assert "bad.jsonl:2 is not valid JSON" in capsys.readouterr().err
    assert main(["generate", "no-such-model", "x"]) == 2
    assert "neither a checkpoint folder nor a preset" in capsys.readouterr().err
    assert main(["generate", "tiny", "x", "--top-p", "0"]) == 2
    assert "top_p" in capsys.readouterr().err
    assert main(["generate", "tiny", "x", "--prefill-graph-max", "-1"]) == 2
    assert "prefill_graph_max must be >= 0" in capsys.readouterr().err
