"""Result records and the leaderboard built from them.

The record of one run (schema, writer, reader) is :mod:`imagenet_dg.records`, shared with the runs that write it;
``reported`` holds the published numbers kept as data;
``aggregation`` turns records into tables over seeds; ``markdown``, ``tidy``, ``latex``, ``page`` and ``plots``
render them; ``publish`` writes the outputs of ``imagenet-dg leaderboard``; ``committed`` keeps the repository's own
leaderboard up to date.
"""
