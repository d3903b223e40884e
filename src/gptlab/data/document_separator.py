"""Documents joined in one file by a separator (``data.document_separator``), split apart as the file is read.

TinyStories' text files hold their stories one after another with a line ``<|endoftext|>`` between them.
Read as one document, the separator would be text: six GPT-2 tokens the model learns to write, where the
end-of-text id belongs. Each document between separators is stripped of the whitespace around it (the line
breaks around the separator), and one that holds nothing else is dropped.

The file's pieces (gptlab.data.documents.read_pieces) end where GPT-2's pre-tokeniser splits anyway, so a
document that spans pieces gives the tokens it gives whole; this module only cuts at separators (where a new
document begins, tokenised on its own) and joins a piece with the next where a separator might straddle them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from gptlab.data.documents import Piece


class SeparatedDocuments:
    """The documents of one file's pieces, each ending with a piece whose ``ends_document`` is set. A piece
    of no text may carry the bytes of what was dropped (a separator, whitespace), for the progress count."""

    def __init__(self, separator: str):
        self.separator = separator
        self.found = False  # whether any separator was met: a misspelt one never is
        self.bytes_read = 0  # of the pieces split so far, over every file

    def split(self, pieces: Iterable[Piece]) -> Iterator[Piece]:
        pieces = iter(pieces)
        carry, carry_bytes = "", 0  # text read but not given out yet, and its bytes
        held: Piece | None = None  # the document's latest piece: its end may be whitespace before a separator
        begun = False  # whether a piece of the document was given out before ``held``
        piece = next(pieces, None)
        while piece is not None:
            self.bytes_read += piece.nbytes  # each piece is ``piece`` once (a carried one's text is counted)
            following = next(pieces, None)  # one piece ahead: a separator may straddle the two
            text, nbytes = carry + piece.text, carry_bytes + piece.nbytes
            *ended, rest = text.split(self.separator)
            self.found = self.found or bool(ended)
            for part in ended:
                yield from self._end_document(held, part, nbytes, begun)
                held, nbytes, begun = None, 0, False
            carry, carry_bytes = "", 0
            if following is not None and self._straddles(rest, following.text):
                carry, carry_bytes, piece = rest, nbytes, following  # joined with the next, and split again
                continue
            if held is None:
                rest = rest.lstrip()  # a document begins with its first visible character
            if rest:
                if held is not None:
                    yield held
                    begun = True
                held, nbytes = Piece(rest, nbytes, ends_document=False), 0
            elif nbytes:
                yield Piece("", nbytes, ends_document=False)
            piece = following
        yield from self._end_document(held, carry, carry_bytes, begun)  # the file's end ends its last document

    @staticmethod
    def _end_document(held: Piece | None, part: str, nbytes: int, begun: bool) -> Iterator[Piece]:
        text = ((held.text if held else "") + (part if held else part.lstrip())).rstrip()
        nbytes += held.nbytes if held else 0
        if text or begun:
            yield Piece(text, nbytes, ends_document=True)
        elif nbytes:
            yield Piece("", nbytes, ends_document=False)  # an empty document: none, but its bytes were read

    def _straddles(self, text: str, following: str) -> bool:
        """Whether a separator begins in ``text`` and ends in ``following`` (no more than one piece is
        joined to the next, and only then: a text whose every line ends a prefix of the separator stays
        in pieces)."""
        reach = len(self.separator) - 1
        if reach == 0:
            return False
        tail = text[-reach:]
        return 0 <= (tail + following[:reach]).find(self.separator) < len(tail)

