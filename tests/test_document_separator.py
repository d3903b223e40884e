"""Documents joined in a file by a separator (data.document_separator, TinyStories' <|endoftext|> lines): each
becomes a document of its own, stripped of the whitespace around it, with the tokens it gives whole, also where
a separator straddles two of the file's pieces; a held-out share of them validates; a separator that is in no
file is named in one line."""

from __future__ import annotations

import numpy as np
import pytest
from cli_runner import TINY_RUN, assert_ok, clean_env, run_script, run_train

from gptlab.core.errors import ConfigError, DataError
from gptlab.data import documents
from gptlab.data.document_separator import SeparatedDocuments
from gptlab.data.documents import Piece, TextFiles, held_out
from gptlab.data.prepare import prepare_shards
from gptlab.data.shards import open_shard
from gptlab.data.tokenizers import GPT2Tokenizer, gpt2_encoding

SEPARATOR = "<|endoftext|>"


def stories(shakespeare_text: str) -> list[str]:
    """Tiny Shakespeare's speeches, as TinyStories' stories: a few lines each."""
    return [speech.strip() for speech in shakespeare_text.split("\n\n") if speech.strip()]


def tinystories_file(path, texts: list[str]):
    """The layout of TinyStories' text files: each story, then a line holding the separator."""
    path.write_text("".join(f"{text}\n{SEPARATOR}\n" for text in texts), encoding="utf-8")
    return path


def texts_of(pieces) -> list[str]:
    """The documents the pieces make, each the join of its pieces' text."""
    found, current = [], ""
    for piece in pieces:
        current += piece.text
        if piece.ends_document:
            found.append(current)
            current = ""
    assert current == "", "pieces after the last document's end"
    return found


def test_each_story_is_a_document_with_its_tokens_and_a_held_out_share_validates(tmp_path, monkeypatch, shakespeare_text):
    texts = stories(shakespeare_text)
    path = tinystories_file(tmp_path / "stories.txt", texts)
    monkeypatch.setattr(documents, "PIECE_BYTES", 4096)  # many pieces, some cut inside a story
    prepared = prepare_shards(TextFiles(str(path), separator=SEPARATOR), "gpt2", tmp_path / "cache", progress=False)

    encoding, eot = gpt2_encoding(), GPT2Tokenizer().eos_id
    for split in ("train", "val"):
        chosen = [text for i, text in enumerate(texts) if held_out(i, 0.1) == (split == "val")]
        tokens = np.concatenate([np.asarray(open_shard(p)) for p in prepared.paths(split)]).tolist()
        assert tokens == sum((encoding.encode_ordinary(text) + [eot] for text in chosen), [])
        assert prepared.index["splits"][split]["documents"] == len(chosen)
    assert SEPARATOR not in encoding.decode(tokens).replace(encoding.decode([eot]), "")


def test_a_separator_cut_by_a_piece_boundary_is_still_found():
    pieces = [Piece("one story.\n<|endo", 18, False), Piece("ftext|>\nAnother.\n<|", 20, False), Piece("endoftext|>", 11, True)]
    splitter = SeparatedDocuments(SEPARATOR)
    out = list(splitter.split(pieces))
    assert texts_of(out) == ["one story.", "Another."] and splitter.found
    assert sum(p.nbytes for p in out) == 49  # every byte read is counted, the separators' too
    assert splitter.bytes_read == 49  # and read once, the pieces joined where a separator straddles them too


def test_empty_documents_are_dropped_and_whitespace_around_each_is_stripped():
    text = f"\n\n  first  \n{SEPARATOR}\n{SEPARATOR}   \n\n{SEPARATOR}\nsecond\nline\n{SEPARATOR}\n"
    out = list(SeparatedDocuments(SEPARATOR).split([Piece(text, len(text), True)]))
    assert texts_of(out) == ["first", "second\nline"]
    assert sum(p.nbytes for p in out) == len(text)


def test_pieces_that_end_like_the_separator_begins_are_not_joined_into_one():
    # Every piece of a file ends with a line break; a separator of its own line begins with one. Joining each
    # such piece to the next "in case" would read the whole file into one piece.
    separator = f"\n{SEPARATOR}\n"
    pieces = [Piece(f"line {i} of a long story.\n", 26, False) for i in range(1000)] + [Piece("the end.", 8, True)]
    out = list(SeparatedDocuments(separator).split(pieces))
    assert len(out) == 1001 and len(texts_of(out)) == 1


def test_named_validation_files_are_split_by_the_separator_too(tmp_path, shakespeare_text):
    texts = stories(shakespeare_text)
    train = tinystories_file(tmp_path / "train.txt", texts[:300])
    val = tinystories_file(tmp_path / "val.txt", texts[300:340])
    split = {"train": [], "val": []}
    for name, piece in TextFiles(str(train), val_path=str(val), separator=SEPARATOR).documents():
        if piece is not None:
            split[name].append(piece)
    assert texts_of(split["train"]) == texts[:300] and texts_of(split["val"]) == texts[300:340]


def test_a_separator_in_no_file_is_one_line_after_the_files_are_read(tmp_path, shakespeare_text):
    path = tinystories_file(tmp_path / "stories.txt", stories(shakespeare_text)[:50])
    source = TextFiles(str(path), separator="<|endoftxt|>")
    with pytest.raises(DataError, match=r"data.document_separator='<\|endoftxt\|>' is in none of the files") as err:
        list(source.documents())
    assert "\n" not in str(err.value)


def test_a_separator_missing_from_the_first_megabytes_is_noted_before_the_whole_pass(tmp_path, monkeypatch, capsys, shakespeare_text):
    # The error can come only after every file was read (a folder may hold files without a separator): on a
    # corpus of gigabytes, minutes. A note says so after SEPARATOR_NOTICE_BYTES (64 MB; 32 KB here), once.
    monkeypatch.setattr(documents, "PIECE_BYTES", 4096)
    monkeypatch.setattr(documents, "SEPARATOR_NOTICE_BYTES", 32 << 10)
    path = tinystories_file(tmp_path / "stories.txt", stories(shakespeare_text)[:2000])
    split = TextFiles(str(path), separator="<|endoftxt|>").documents()
    read = 0
    while read < (32 << 10) - 4096:  # not yet
        read += next(split)[1].nbytes
        assert "note:" not in capsys.readouterr().err
    with pytest.raises(DataError, match="is in none of the files"):
        list(split)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: no data.document_separator='<|endoftxt|>' in the first 0 MB of data.path={path}; if it is "
                     "misspelt, stop (Ctrl-C) and fix it now: found in no file, it stops the run with an error after the whole pass"]
    # Found in time: no note.
    list(TextFiles(str(path), separator=SEPARATOR).documents())
    assert "note:" not in capsys.readouterr().err


def test_the_separator_is_part_of_the_shards_key(tmp_path, shakespeare_text):
    path = tinystories_file(tmp_path / "stories.txt", stories(shakespeare_text)[:200])
    whole = prepare_shards(TextFiles(str(path)), "char", tmp_path / "cache", progress=False)
    separated = prepare_shards(TextFiles(str(path), separator=SEPARATOR), "char", tmp_path / "cache", progress=False)
    assert whole.folder != separated.folder
    assert whole.index["splits"]["train"]["documents"] == 1 and separated.index["splits"]["train"]["documents"] > 150


def test_an_empty_separator_is_refused_by_the_schema():
    from gptlab.config.data import TextFilesDataConfig

    with pytest.raises(ConfigError, match="data.document_separator is empty"):
        TextFilesDataConfig(path="x.txt", document_separator="")


@pytest.mark.e2e
def test_prepare_and_train_on_a_tinystories_file_through_the_commands(tmp_path, shakespeare_text):
    texts = stories(shakespeare_text)
    path = tinystories_file(tmp_path / "TinyStories-valid.txt", texts)
    env = clean_env(GPTLAB_CACHE_DIR=str(tmp_path / "cache"))
    separator = f'data.document_separator="{SEPARATOR}"'  # Hydra reads | and < only in quotes
    prepared = run_script("prepare.py", "data=text", f"data.path={path}", separator, env=env)
    assert_ok(prepared)
    train_docs = sum(not held_out(i, 0.1) for i in range(len(texts)))
    assert f"train: {train_docs:,} documents" in prepared.stdout, prepared.stdout

    trained = run_train(tmp_path / "run", "data=text", f"data.path={path}", separator, "model=gpt_tiny", *TINY_RUN, env=env)
    assert_ok(trained)
    assert "tokenising" not in trained.stderr  # prepare.py's shards were found
