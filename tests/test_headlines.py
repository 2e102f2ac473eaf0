"""The embedded chat data `bbc-headlines`: BBC News articles as headline requests."""

from __future__ import annotations

from declora.node.data import load_dataset
from declora.node.headlines import STORY_WORDS, headline_chat
from declora.node.recipe import Recipe
from declora.node.workload import load_workload


def test_an_article_becomes_a_story_in_and_its_title_out() -> None:
    words = " ".join(f"w{i}" for i in range(100))
    chat = headline_chat(f"The title\n\n{words}\n")
    (role_u, prompt), (role_a, answer) = chat
    assert (role_u, role_a, answer) == ("user", "assistant", "The title")
    assert prompt.endswith(" ".join(f"w{i}" for i in range(STORY_WORDS)))
    assert f"w{STORY_WORDS}" not in prompt.split()


def test_the_same_split_and_labels_as_bbcnews() -> None:
    news_train, news_test = load_dataset("bbcnews")
    train, test = load_dataset("bbc-headlines")
    assert (len(train), len(test)) == (len(news_train), len(news_test))
    assert train.chats is not None and test.chats is not None
    assert (train.labels == news_train.labels).all() and train.label_names == news_train.label_names
    assert train.chats[0][1][1] == news_train.texts[0].partition("\n")[0].strip()


def test_only_the_headline_carries_loss() -> None:
    """tiny-llama's byte tokenizer: the labelled ids are the title's bytes, then EOS."""
    recipe = Recipe(model="tiny-llama", task="lm", data="bbc-headlines", max_length=400, max_eval=4)
    work = load_workload(recipe, 5)
    enc = work.encoded_test()
    assert enc is not None and len(enc) == 4
    for row in range(len(enc)):
        labelled = enc.labels[row][enc.labels[row] != -100].tolist()
        title = work.test.chats[row][1][1]  # type: ignore[index]
        assert labelled == [b + 3 for b in title.encode()] + [2]  # bytes at 3.., EOS 2
