"""Make the text example's data: short customer-support tickets in six classes, from templates.

Nothing is downloaded: every ticket is drawn from the templates and word lists below with a
fixed seed. Three pairs of classes are made to overlap, each to a different degree, so an
audit has confusions to find and an order to find them in:

- ``billing`` / ``refund``: 30% of the tickets of each class (and 8% of billing's through the
  third pair) come from one shared pool about charges and money on a card, which says nothing
  about whether the customer wants a refund. The strongest overlap.
- ``shipping`` / ``delivery_delay``: 22% of each class come from a shared pool about parcels,
  couriers and tracking.
- ``account`` / ``billing``: 10% of account tickets (8% of billing's) ask about payment details
  stored in the account. The weakest overlap.

``praise`` overlaps with nothing (it borrows a few words such as "refund" and "delivery" but
in clearly thankful sentences): the easy class. A ticket drawn from a shared pool is
ambiguous by construction, so no model can classify it better than a coin flip between its
two classes; that is what leaves the confusions.

Run from the repository root: python examples/text/make_data.py (train.py calls it too).
Needs only numpy.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: Class names in the order of the model's logits: sorted, as the auditor maps string labels.
CLASS_NAMES = ("account", "billing", "delivery_delay", "praise", "refund", "shipping")
TICKETS_PER_CLASS = 500
TEST_SHARE = 0.2

WORDS = {
    "item": ["jacket", "blender", "phone case", "desk lamp", "backpack", "coffee maker", "speaker", "yoga mat",
             "kettle", "watch", "printer", "toaster", "umbrella", "office chair", "water bottle", "camera bag"],
    "amount": ["$12", "$19.99", "$25", "$40", "$64.50", "$99", "$120", "$150", "$7.95", "$230"],
    "fee": ["service fee", "tax", "late fee", "handling fee", "subscription fee", "currency fee"],
    "money": ["charge", "payment", "transaction", "amount", "bill", "debit"],
    "place": ["canada", "germany", "the uk", "australia", "ireland", "norway", "japan", "mexico", "spain", "texas"],
    "when": ["last week", "on monday", "yesterday", "two weeks ago", "on friday", "ten days ago", "last month"],
    "days": ["three", "five", "seven", "ten", "twelve", "four"],
    "parcel": ["package", "parcel", "order", "box", "delivery"],
    "courier": ["courier", "carrier", "driver", "post office"],
    "num": ["#1042", "#2291", "#3307", "#4815", "#5120", "#6634", "#7719", "#8023", "#9356"],
}
OPENERS = ["", "", "", "hi,", "hello,", "hey,", "good morning,", "hi team,", "dear support,"]
CLOSERS = ["", "", "", "thanks", "thank you", "please help", "please advise", "any update?", "thanks in advance"]

# Each pool: templates whose {slots} are filled from WORDS. A class draws from its own pool and,
# with the weights in MIXTURE, from pools it shares with another class.
POOLS = {
    "billing": [
        "i was charged twice for my {item} order", "my card was charged {amount} but the invoice says {amount}",
        "why is there an extra {fee} on my invoice", "my payment keeps getting declined at checkout",
        "can i get a copy of the invoice for my {item}", "please update the credit card you have on file",
        "the {fee} on my statement looks wrong", "i do not recognise a charge of {amount} on my card",
        "you billed me {amount} for a {fee} i never agreed to", "the invoice for order {num} lists the wrong tax",
    ],
    "refund": [
        "i returned the {item} {when} and still have no refund", "i want my money back for the {item}",
        "how long does a refund take to reach my card", "please refund the {item}, it arrived broken",
        "my refund of {amount} has not shown up on my card", "can i cancel order {num} and get a refund",
        "the refund was for the wrong amount, i paid {amount}", "you promised a refund {when} and nothing came",
        "i sent the {item} back, when will i be refunded", "please return my {amount} for the cancelled {item}",
    ],
    "shipping": [
        "how much does shipping to {place} cost", "do you ship to {place}",
        "can i change the shipping address on order {num}", "is express shipping available for the {item}",
        "which {courier} do you use for {place}", "can i pick up my {item} instead of having it shipped",
        "is shipping free for orders over {amount}", "can you ship the {item} and the {item} together",
        "do you offer international shipping to {place}", "what are the shipping options for a {item}",
    ],
    "delivery_delay": [
        "my {item} has not arrived yet, it was due {when}", "the tracking has not updated for {days} days",
        "my {parcel} is late and the {courier} says nothing", "where is my order, it is {days} days late",
        "the {parcel} was supposed to come {when} but nothing came", "my {parcel} seems stuck in {place}",
        "still waiting for my {item}, it shipped {when}", "the {courier} never showed up with my {parcel}",
        "my {parcel} is {days} days overdue", "it has been {days} days and my {item} is still not here",
    ],
    "account": [
        "i cannot log in to my account", "the password reset email never arrives",
        "how do i change the email address on my account", "my account is locked after too many attempts",
        "please delete my account and all my data", "the app logs me out every time i open it",
        "the two factor code is not working", "i forgot my username and my password",
        "someone else may have logged in to my account", "how do i change my password",
    ],
    "praise": [
        "the {item} is great, thank you so much", "fast delivery and lovely packaging, thank you",
        "your support team was really helpful", "love the {item}, will order again",
        "five stars, everything was perfect", "just wanted to say thanks for the quick refund",
        "the {item} arrived early and works perfectly", "best shop online, great prices and friendly staff",
        "really happy with my {item}, well done", "thank you for the wonderful service",
    ],
    # shared pools: the same texts for two classes
    "billing|refund": [
        "there is a problem with the {money} for my {item}", "i have a question about {amount} on my card",
        "the {money} for order {num} is wrong", "please check the {money} for the {item}",
        "my bank shows {amount} from your store, what is this", "something is off with the {money} of {amount}",
        "i need help with the {money} on order {num}", "the {money} of {amount} {when} does not look right",
    ],
    "delivery_delay|shipping": [
        "question about the {courier} for my {item} {parcel}", "what is happening with my {item} {parcel}",
        "can you check the tracking for my {parcel} to {place}", "i need information about my {parcel} to {place}",
        "which {courier} has my {parcel} {num}", "i have a question about delivery of the {item} to {place}",
        "is my {parcel} {num} on its way", "please tell me about the {parcel} for my {item}",
    ],
    "account|billing": [
        "how do i change the payment method saved in my account", "where can i see my past payments in my account",
        "my account shows a card i removed", "the card in my account profile is out of date",
        "my account page shows the wrong billing address",
    ],
}
#: Share of each class's tickets drawn from each pool (rows sum to 1).
MIXTURE = {
    "account": {"account": 0.90, "account|billing": 0.10},
    "billing": {"billing": 0.62, "billing|refund": 0.30, "account|billing": 0.08},
    "delivery_delay": {"delivery_delay": 0.78, "delivery_delay|shipping": 0.22},
    "praise": {"praise": 1.0},
    "refund": {"refund": 0.70, "billing|refund": 0.30},
    "shipping": {"shipping": 0.78, "delivery_delay|shipping": 0.22},
}


def ticket(rng: np.random.Generator, pool: str) -> str:
    """One ticket from a pool: a template, its slots filled, an opener and a closer."""
    template = POOLS[pool][rng.integers(len(POOLS[pool]))]
    parts = template.split("{")
    text = parts[0]
    for part in parts[1:]:
        slot, rest = part.split("}", 1)
        text += WORDS[slot][rng.integers(len(WORDS[slot]))] + rest
    opener = OPENERS[rng.integers(len(OPENERS))]
    closer = CLOSERS[rng.integers(len(CLOSERS))]
    return " ".join(p for p in (opener, text, closer) if p)


def make_tickets(seed: int = 0) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The train and test splits: lists of (text, label), stratified, shuffled, seeded."""
    rng = np.random.default_rng(seed)
    train: list[tuple[str, str]] = []
    test: list[tuple[str, str]] = []
    n_test = round(TICKETS_PER_CLASS * TEST_SHARE)
    for label in CLASS_NAMES:
        pools, weights = zip(*MIXTURE[label].items())
        drawn = rng.choice(len(pools), size=TICKETS_PER_CLASS, p=np.array(weights))
        rows = [(ticket(rng, pools[i]), label) for i in drawn]
        test += rows[:n_test]
        train += rows[n_test:]
    return [train[i] for i in rng.permutation(len(train))], [test[i] for i in rng.permutation(len(test))]


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def main() -> None:
    train, test = make_tickets()
    write_csv(HERE / "train.csv", train)
    write_csv(HERE / "test.csv", test)
    print(f"wrote {len(train)} training and {len(test)} test tickets to {HERE}")


if __name__ == "__main__":
    main()
