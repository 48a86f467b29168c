"""The 16 reserved special tokens (SPEC section 5). Ids 0..15 are never masked."""

UNK_ID, BOS_ID, EOS_ID, PAD_ID, MASK_ID = 0, 1, 2, 3, 4
NUM_SPECIAL = 16
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<mask>"] + [
    f"<reserved_{i}>" for i in range(5, NUM_SPECIAL)
]
