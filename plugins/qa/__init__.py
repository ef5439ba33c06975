"""Built-in open QA task ``qa``: short factual questions, answers compared by an LLM."""
