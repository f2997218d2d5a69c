"""The sandbox payment channels: in-process stand-ins for WeChat Pay,
Alipay and UnionPay that keep their own books and keys and speak each
channel's wire format (requests, answers, signed callbacks, statements).

Our providers reach them through an ``httpx`` transport
(:func:`payments.sandbox.channels.transport`), and they call our notify
endpoint over real HTTP from a Celery task (:mod:`payments.sandbox.notify`),
late and sometimes twice, on the channel's own retry schedule. Only
``PAYMENTS_SANDBOX`` switches them on.
"""
