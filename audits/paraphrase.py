"""Paraphrase pairs for measuring what a transform costs retrieval (the utility side of the frontier).

Each pair is one message of the synthetic generator (audits.corpus) and the same facts worded by
a second, hand-written template: the same person, secrets, product, date and amount, said
differently. Retrieval recall@10 asks, for each paraphrase, whether its original is among the ten
documents nearest to it: the task a search deployment exists for, and one that depends on the
fine detail (which person, which product) that privacy transforms blur.

The document side is exactly `generate_messages(n, seed)`: with the auxiliary corpus' seed the
documents are the first `n` texts of the synthetic auxiliary corpus, never production text.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from faker import Faker

from audits.corpus import TEMPLATES, _slot_values

# PARAPHRASES[i] says what TEMPLATES[i] says, with the same slots, in other words.
PARAPHRASES: tuple[str, ...] = (
    "{name} says the {product} broke after updating and would like a call back on {phone}.",
    "Delivery to {address} for {name} is missing even though tracking marked it delivered {date}.",
    "{name} wants the account email {email} replaced with a different address.",
    "Two charges for one {product} appeared; the card ends in {card4} and the account is {account}.",
    "Password reset needed for user {username}; the account is registered to {email}.",
    "Refund request from {name} to account {account}: the {product} purchased {date} does not work.",
    "{medication} refill requested by {name} (date of birth {dob}) as the {condition} is getting worse.",
    "{name} has a {condition} appointment on {date}; to move it, phone {phone}.",
    "Tests confirm {condition} for {name}, date of birth {dob}; prescribe {medication} two times a day.",
    "{name} asks the doctor whether {medication} is still safe now that the {condition} is back.",
    "Claim {account}: the insurer refused to cover {name}'s {condition} treatment from {date}.",
    "A note signed {date} explains that {name} was off work this week with {condition}.",
    "Medical leave from {date} requested for {condition} by {name} of the {department} team.",
    "From {date}, {name} of {department} will earn {amount} a year.",
    "The background check of {name} (SSN {ssn}, living at {address}) has been completed.",
    "New emergency contact details for {name}: email {email}, telephone {phone}.",
    "As of {date}, {name} from {department} has been put on a performance improvement plan.",
    "A complaint about a {department} manager was lodged by {name}, reachable at {email}.",
    "Send {amount} from account {account} to IBAN {iban} in the name of {name} before {date}.",
    "{name}'s loan request is being reviewed: income {amount}, date of birth {dob}, SSN {ssn}.",
    "Please confirm on {phone}: {name}'s card ending {card4} was charged abroad.",
    "The tax statement of account {account} belonging to {name} lists a balance of {amount}.",
    "Mortgage {account} of {name}, {address}, is three months in arrears.",
    "On {date} a refund of {amount} for {name} was approved, to be sent to {email}.",
)


def _slots(template: str) -> frozenset[str]:
    return frozenset(field for _, field, _, _ in string.Formatter().parse(template) if field)


if len(PARAPHRASES) != len(TEMPLATES) or any(
        _slots(p) != _slots(t) for p, (_, t) in zip(PARAPHRASES, TEMPLATES, strict=False)):
    raise RuntimeError("audits.paraphrase: every template needs a paraphrase with the same slots")


@dataclass(frozen=True)
class ParaphrasePairs:
    """`queries[i]` and `documents[i]` state the same facts in different words."""

    queries: tuple[str, ...]
    documents: tuple[str, ...]
    template_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        if not len(self.queries) == len(self.documents) == len(self.template_ids):
            raise ValueError("paraphrase pairs: queries, documents and template_ids differ in length")

    def __len__(self) -> int:
        return len(self.queries)


def paraphrase_pairs(n: int, seed: int) -> ParaphrasePairs:
    """`n` pairs; the documents are `generate_messages(n, seed)`'s texts, drawn the same way."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    queries, documents, ids = [], [], []
    for _ in range(n):   # the draws of audits.corpus.generate_messages, in the same order
        template_id = rng.randrange(len(TEMPLATES))
        values = _slot_values(fake, rng)
        used = {slot: values[slot] for slot in _slots(TEMPLATES[template_id][1])}
        documents.append(TEMPLATES[template_id][1].format(**used))
        queries.append(PARAPHRASES[template_id].format(**used))
        ids.append(template_id)
    return ParaphrasePairs(tuple(queries), tuple(documents), tuple(ids))
