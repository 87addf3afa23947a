"""The data side of training and of the tag editor, as a library (no UI, no torch unless asked).

scan (find images and captions) · tags (pure tag functions) · tag_filter (AND/OR/NOT filters) ·
captions (read, atomic write, conflicts) · history (undo/redo steps on disk) · edits (bulk edits
as values, shared by the two below) · library (the in-memory `DatasetIndex` with bulk edits
written at once, undo and redo) · session (the tag editor's `EditSession`: edits in memory,
undo/redo, save what changed) · autotag (threshold, blacklist, merge modes for interrogator
results) · images (decode any file safely) · thumbnails (lazy in-memory thumbnail cache) ·
buckets (kohya buckets, crop, flip) · check (dataset report) · training_captions (keep_tokens,
shuffle, dropout) · caches (latent and text-encoder caches; imports torch, so import it only
when needed).
"""
