"""What goes in: SeqIO batches, the vocabulary, JSONL reading, late and quiet TensorFlow imports."""
