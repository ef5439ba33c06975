from importlib.resources import files

from autojudge.core.task import Example, Task
from autojudge.plugins import hookimpl


class WordCount(Task):
    name = "example-wordcount"
    description = "Count the words of a sentence (example third-party plugin)."

    def load(self, split, *, data_dir=None, limit=None):
        sentences = (files(__package__) / f"{split}.txt").read_text("utf-8").splitlines()[:limit]
        return [Example(f"{split}-{i}", s, reference=len(s.split())) for i, s in enumerate(sentences)]

    def build_messages(self, example):
        return [{"role": "user", "content": f"How many words are in this sentence? {example.question}"}]

    def extract_answer(self, response):
        return next((int(w) for w in reversed(response.replace(".", " ").split()) if w.isdigit()), None)

    def equivalent(self, answer_a, answer_b, example):
        return answer_a is not None and answer_a == answer_b

    def is_correct(self, answer, example):
        return self.equivalent(answer, example.reference, example)


@hookimpl
def register_tasks(register):
    register(WordCount())
