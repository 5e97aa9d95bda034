"""gatezoo lit_models: the LightningModules (classifier, AWD-LSTM language model, seq2seq translator) and their nets,
callbacks and regularizers; they receive a network and an optimizer factory and never read data files."""
