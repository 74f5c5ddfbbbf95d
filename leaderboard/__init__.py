"""Result records and the leaderboard built from them.

``records`` owns the record of one run (schema, writer, reader); ``reported`` the published numbers kept as data;
``aggregation`` turns records into tables over seeds; ``markdown``, ``tidy``, ``latex``, ``page`` and ``plots``
render them; ``publish`` writes the outputs of ``imagenet-dg leaderboard``; ``committed`` keeps the repository's own
leaderboard up to date.
"""
