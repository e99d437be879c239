"""Ordered tasks are stored under their partition; signatures and replays use the subject
they were published on."""

from __future__ import annotations

import pytest

from jetpool_protocol.lanes import ordered_subject, published_subject

BASE = "tasks.billing.invoices"


def test_a_stored_ordered_task_maps_back_to_its_published_subject():
    assert published_subject(f"{BASE}.ordered.3.acct-17", BASE) == ordered_subject(BASE, "acct-17")


@pytest.mark.parametrize(
    "subject",
    [
        f"{BASE}.high.ordered.2024.report",  # a level's task that merely contains the word
        f"{BASE}.ordered.acct-17",  # already the published form
        f"{BASE}.ordered.x.acct-17",  # not a partition number
        f"{BASE}.ordered.3.acct.17",  # a key is one token
        "tasks.billing.other.ordered.3.acct-17",  # another pool's base
        f"{BASE}.render",
    ],
)
def test_other_subjects_are_left_alone(subject: str):
    assert published_subject(subject, BASE) == subject
