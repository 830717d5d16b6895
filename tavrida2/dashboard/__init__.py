"""``tavrida2 dashboard``: a small web app showing a tavrida2 system live.

:mod:`.system` reads the config and ``.ds`` files (their graph and picture);
:mod:`.management` asks RabbitMQ's management HTTP API for queue depths,
consumers and rates; :mod:`.instances` hears the servers' announcements;
:mod:`.traces` reads recent messages from a trace database; :mod:`.app` is the
Starlette application serving the page (``static/``: plain HTML, JS and CSS,
no build step) and its JSON API; :mod:`.command` runs it under uvicorn.
Needs the ``dashboard`` extra: ``pip install tavrida2[dashboard]``.
"""
