"""What ``fastbert data prepare`` makes of a corpus: pair lengths, passes, seed, held-out share, shard size."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError

SPECIAL_TOKENS_PER_PAIR = 3  # [CLS] A [SEP] B [SEP]


@dataclass(frozen=True)
class PrepareSettings:
    max_seq_len: int = 128
    short_seq_prob: float = 0.1
    dupe_factor: int = 1
    seed: int = 12345
    validation_fraction: float = 0.0  # share of documents held out (rounded to whole documents)
    validation_documents: int = 0  # or exactly this many documents
    shard_mib: float = 256.0  # tokens per shard file, at most (a shard holds one pair at least)

    def validate(self) -> None:
        if self.max_seq_len < SPECIAL_TOKENS_PER_PAIR + 2:
            raise UserError(f"--max-seq-len must be at least {SPECIAL_TOKENS_PER_PAIR + 2}, got {self.max_seq_len}")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise UserError(f"--short-seq-prob must lie in [0, 1], got {self.short_seq_prob}")
        if self.dupe_factor < 1:
            raise UserError(f"--dupe-factor must be at least 1, got {self.dupe_factor}")
        if self.seed < 0:
            raise UserError(f"--seed must be non-negative, got {self.seed}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise UserError(f"--validation-fraction must lie in [0, 1), got {self.validation_fraction}")
        if self.validation_documents < 0:
            raise UserError(f"--validation-documents must be non-negative, got {self.validation_documents}")
        if self.validation_fraction and self.validation_documents:
            raise UserError("give --validation-fraction or --validation-documents, not both")
        if not self.shard_mib > 0:
            raise UserError(f"--shard-mib must be positive, got {self.shard_mib}")

    @property
    def max_num_tokens(self) -> int:
        return self.max_seq_len - SPECIAL_TOKENS_PER_PAIR

    @property
    def max_shard_bytes(self) -> int:
        return int(self.shard_mib * 2**20)

    def held_out_documents(self, documents: int) -> int:
        """How many of ``documents`` the validation split gets."""
        if self.validation_documents:
            return self.validation_documents
        return round(self.validation_fraction * documents)
