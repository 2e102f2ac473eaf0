"""`bbc-headlines`: the embedded BBC News articles as a chat dataset (causal LM).

Each article becomes one user/assistant turn: the user gives the story's first
`STORY_WORDS` words and asks for a headline; the assistant answers with the article's
title (its first line). Labels are the articles' categories, so the data can be
shared out by topic, and the train/test split is BBC News's own (`data.load_dataset`),
so the same articles are held out as for classification.
"""

from __future__ import annotations

from declora.node.data import Chat, TextDataset

STORY_WORDS = 40
PROMPT = "Write a headline for this news story:\n\n{story}"


def headline_chat(article: str) -> Chat:
    """The (user, assistant) turns of one BBC article: its story in, its title out."""
    title, _, body = article.strip().partition("\n")
    story = " ".join(body.split()[:STORY_WORDS])
    return (("user", PROMPT.format(story=story)), ("assistant", title.strip()))


def as_headlines(news: TextDataset) -> TextDataset:
    """`news` (BBC News articles) as headline chats, labels and order unchanged."""
    chats = tuple(headline_chat(text) for text in news.texts)
    texts = tuple("\n".join(f"{role}: {content}" for role, content in c) for c in chats)
    return TextDataset(texts, news.labels, news.label_names, chats)
