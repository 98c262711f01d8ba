"""Fixed texts the int8 recipe measures activations on (backends/int8_smoothing.py).

Written for this purpose: plain sentences on unrelated topics, questions and
statements, a few non-ASCII words, short and long (the long ones are the short
ones joined). They only need to make the model's large channels show up; they are
not the bench corpus and never change with it.
"""

from __future__ import annotations

SENTENCES: tuple[str, ...] = (
    "How do I reset my password?",
    "The train to Zürich leaves at seven from platform four.",
    "What is the capital of Australia?",
    "Rainfall in the northern valleys doubled over the last decade, and farmers moved to crops that need less sun.",
    "Search engines rank documents by how well they match a query and how often they are linked.",
    "Add two cups of flour, a pinch of salt and mix until the dough no longer sticks.",
    "Why does my laptop fan run at full speed when nothing is open?",
    "The museum's new wing shows ceramics from Kyoto, 東京 and the villages around them.",
    "Interest rates rose for the third time this year, and mortgage demand fell sharply.",
    "Best hiking trails near the coast",
    "A vector database stores embeddings and finds the nearest ones to a query vector.",
    "She played the cello in the orchestra for twenty years before she started teaching.",
    "Is it safe to eat raw eggs?",
    "The café on the corner serves a naïve but honest espresso.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "Error 503: the service is temporarily unavailable, try again later.",
    "Which programming language should a beginner learn first?",
    "The committee will publish its report after the hearings end in March.",
    "Kubernetes restarts a container when its liveness probe fails three times in a row.",
    "Migrating birds use the earth's magnetic field and the position of the sun to find their way.",
    "cheap flights to São Paulo in december",
    "The novel follows two sisters who inherit a failing bookshop in a small harbour town.",
    "Drink plenty of water, rest, and see a doctor if the fever lasts more than three days.",
    "Our quarterly revenue grew by twelve percent, mostly from subscriptions in Europe.",
    "What time does the pharmacy close on Sundays?",
    "The bridge over the Øresund links Copenhagen and Malmö by road and rail.",
    "Gradient descent updates each weight a small step against the gradient of the loss.",
    "Tickets are non-refundable but can be exchanged up to 24 hours before the show.",
    "Volcanic soil is rich in minerals, which is why vineyards often grow on old lava slopes.",
    "Why is the sky blue?",
    "The match was postponed because of heavy snow; it will be replayed next Wednesday.",
    "Please find attached the signed contract and the invoice for the first month.",
)

# Long texts: runs of sentences, so that calibration also sees long sequences.
LONG_TEXTS: tuple[str, ...] = tuple(
    " ".join(SENTENCES[start:] + SENTENCES[:start]) for start in range(0, len(SENTENCES), 4)
)

CALIBRATION_TEXTS: tuple[str, ...] = SENTENCES + LONG_TEXTS
