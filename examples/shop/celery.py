from celery import Celery

app = Celery("shop")
app.config_from_object("examples.shop.celeryconfig")
app.autodiscover_tasks(["examples.shop"])
