"""The data side: the language model and its partial forwards, tokens, the activation cache,
the text corpus and the Hugging Face hub (datasets, replicas, the tiny Gemma of `paper-tiny`)."""
