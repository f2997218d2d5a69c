"""Routing events to department systems: endpoints, the outbox, deliveries.

The outbox row is the truth and is written in the same transaction as the
change it reports, together with one delivery row per subscribed endpoint.
After commit a Celery task is nudged; if the nudge is lost (broker down,
worker killed) the periodic sweeper finds the due delivery and nudges again.
A delivery is claimed with a short lease before each try, so duplicate
nudges never send twice at once, and a killed worker's claim simply expires.
Every try is recorded; failures follow the retry schedule, then dead-letter.

Events of one application reach each endpoint in the order they happened:
every delivery carries the application as its ordering key and the event's
place among that application's events, and a delivery is claimed only when
no earlier one of its key to its endpoint is still pending. The claim is one
conditional UPDATE, so this holds however many workers race; a delivery that
finishes (delivered or dead-lettered) nudges the one that waited for it.

One module per concern, each importing only the ones above it in this list:

- :mod:`~services.routing.events`: event types, their payloads, in-process subscribers
- :mod:`~services.routing.transport`: URL rules, resolving, signing, the HTTP POST
- :mod:`~services.routing.outbox`: publishing events and their deliveries (held or
  due, their place in order), nudging workers, running subscribers
- :mod:`~services.routing.endpoints`: registering endpoints, secrets, pings, and
  the circuit breaker (pause, resume, 410 Gone)
- :mod:`~services.routing.deliveries`: one try of a delivery (claim, send, record,
  retry schedule), releasing the next in order, replay; the "delivered" hook
- :mod:`~services.routing.sweeper`: the periodic sweep and the probes of paused endpoints

Workers are nudged by task name (``routing.deliver``, ``routing.handle_event``),
so the engine never imports ``services.tasks``, which calls it; what a
delivered event means to an application is registered by the applications
side in ``ServicesConfig.ready`` (:func:`services.routing.deliveries.on_delivered`).
"""
