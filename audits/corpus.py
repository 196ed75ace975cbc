"""Synthetic PII-bearing messages: the demo's production text and the built-in auxiliary corpus.

Each message knows which of its words are secrets (names, emails, conditions, account numbers),
so probes can measure secret recovery and reports can redact them. Generation is reproducible
for a seed; two different seeds give disjoint people, so an attacker trained on one seed never
sees the other seed's secrets.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from faker import Faker

CATEGORIES = ("support", "medical", "hr", "finance")

MEDICAL_CONDITIONS = (
    "asthma", "diabetes", "hypertension", "migraine", "epilepsy", "depression", "anxiety",
    "arthritis", "psoriasis", "eczema", "anemia", "bronchitis", "pneumonia", "glaucoma",
    "hepatitis", "insomnia", "celiac disease", "crohn's disease", "tinnitus", "scoliosis",
    "hypothyroidism", "fibromyalgia", "gout", "sciatica", "vertigo", "lupus", "shingles",
    "tuberculosis", "osteoporosis", "endometriosis",
)
MEDICATIONS = (
    "metformin", "lisinopril", "albuterol", "sertraline", "ibuprofen", "levothyroxine",
    "amoxicillin", "omeprazole", "prednisone", "insulin", "atorvastatin", "gabapentin",
)
PRODUCTS = (
    "router", "laptop", "subscription", "headphones", "smart watch", "printer", "phone plan",
    "gift card", "coffee machine", "tablet", "camera", "account upgrade",
)
DEPARTMENTS = ("engineering", "sales", "finance", "marketing", "legal", "operations", "support")

# Each template names its category and its slots. Slots that are secrets are listed in
# SECRET_SLOTS; the rest (product, department, amount) are context an attacker may also learn.
TEMPLATES: tuple[tuple[str, str], ...] = (
    ("support", "Hi, this is {name}. My {product} stopped working after the update, please call me at {phone}."),
    ("support", "Order for {name} never arrived at {address}. Tracking says delivered on {date}."),
    ("support", "Please change the email on my account from {email} to a new one, thanks, {name}."),
    ("support", "I was charged twice for my {product}. Card ending {card4}, account {account}."),
    ("support", "Can someone reset my password? Username {username}, registered with {email}."),
    ("support", "{name} here, the {product} I bought on {date} is broken, I want a refund to account {account}."),
    ("medical", "Patient {name}, born {dob}, reports worsening {condition} and asks to refill {medication}."),
    ("medical", "Reminder for {name}: your appointment about {condition} is on {date}. Call {phone} to reschedule."),
    ("medical", "Lab results for {name} ({dob}) confirm {condition}; start {medication} twice daily."),
    ("medical", "Hello doctor, it's {name}. My {condition} flared up again, is it safe to keep taking {medication}?"),
    ("medical", "Insurance claim {account} for {name}: treatment of {condition} on {date} was denied."),
    ("medical", "{name} missed work this week because of {condition}; note signed on {date}."),
    ("hr", "Employee {name} in {department} requests medical leave for {condition} starting {date}."),
    ("hr", "Salary for {name} ({department}) will change to {amount} per year from {date}."),
    ("hr", "Background check for {name}, SSN {ssn}, address {address}, is complete."),
    ("hr", "Please update the emergency contact of {name}: phone {phone}, email {email}."),
    ("hr", "Performance review: {name} in {department} is placed on an improvement plan as of {date}."),
    ("hr", "{name} filed a complaint against a manager in {department}; contact at {email}."),
    ("finance", "Wire {amount} from account {account} to {name} at IBAN {iban} by {date}."),
    ("finance", "Loan application of {name}, born {dob}, income {amount}, SSN {ssn}, under review."),
    ("finance", "Card ending {card4} of {name} was used abroad; please confirm at {phone}."),
    ("finance", "Tax statement for {name}, account {account}, shows a balance of {amount}."),
    ("finance", "{name} at {address} is three months behind on mortgage {account}."),
    ("finance", "Refund of {amount} to {email} for {name} approved on {date}."),
)
SECRET_SLOTS = frozenset(
    {"name", "email", "phone", "address", "dob", "ssn", "account", "card4", "iban", "username",
     "condition", "medication"}
)
# Kinds derived from a slot's value: the surname alone is what identifies someone in a text,
# and candidate inversion substitutes it among other surnames.
DERIVED_SECRETS = {"surname": ("name", lambda name: name.rsplit(" ", 1)[-1])}


@dataclass(frozen=True)
class Message:
    """One synthetic message, its category and the secret values it contains."""

    text: str
    category: str
    template_id: int
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def mentions_condition(self) -> bool:
        return "condition" in self.secrets


def generate_messages(n: int, seed: int, templates: tuple[tuple[str, str], ...] = TEMPLATES) -> list[Message]:
    """Return `n` messages drawn uniformly over `templates`, reproducibly for `seed`."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        template_id = rng.randrange(len(templates))
        category, template = templates[template_id]
        values = _slot_values(fake, rng)
        used = {slot: values[slot] for slot in values if "{" + slot + "}" in template}
        text = template.format(**used)
        secrets = {slot: value for slot, value in used.items() if slot in SECRET_SLOTS}
        for kind, (slot, derive) in DERIVED_SECRETS.items():
            if slot in secrets:
                secrets[kind] = derive(secrets[slot])
        out.append(Message(text=text, category=category, template_id=template_id, secrets=secrets))
    return out


def _slot_values(fake: Faker, rng: random.Random) -> dict[str, str]:
    return {
        # First and last name only: Faker's titles and suffixes ("Dr.", "MD") are noise here.
        "name": f"{fake.first_name()} {fake.last_name()}",
        "email": fake.email(),
        "phone": fake.phone_number(),
        "address": fake.address().replace("\n", ", "),
        "date": fake.date_this_year().strftime("%B %d"),
        "dob": fake.date_of_birth(minimum_age=18, maximum_age=90).isoformat(),
        "ssn": fake.ssn(),
        "account": fake.bban(),
        "card4": fake.credit_card_number()[-4:],
        "iban": fake.iban(),
        "username": fake.user_name(),
        "amount": f"${rng.randrange(500, 250_000):,}",
        "condition": rng.choice(MEDICAL_CONDITIONS),
        "medication": rng.choice(MEDICATIONS),
        "product": rng.choice(PRODUCTS),
        "department": rng.choice(DEPARTMENTS),
    }


def corpus_hash(texts: list[str] | tuple[str, ...]) -> str:
    """A stable fingerprint of a corpus, used to key caches of its embeddings and attack models."""
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]
