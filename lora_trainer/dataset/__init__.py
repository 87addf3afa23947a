"""The data side of training and of the tag editor, as a library (no UI, no torch unless asked).

scan (find images and captions) · tags (pure tag functions) · tag_filter (AND/OR/NOT filters) ·
captions (read, atomic write, conflicts) · history (undo steps on disk) · library (the in-memory
`DatasetIndex` with bulk edits and undo) · images (decode any file safely) · buckets (kohya
buckets, crop, flip) · check (dataset report) · training_captions (keep_tokens, shuffle,
dropout) · caches (latent and text-encoder caches; imports torch, so import it only when needed).
"""
