"""PricePlan.version: a stamp PostgreSQL moves whenever what a plan's price book is made of changes.

Processes keep price books in memory and check the stamp, read with every API key, before using
one (billing/selectors.py). Triggers move it, so no write path can forget to: any insert, update
or delete of a plan's prices (one statement-level trigger per event, over its transition table)
and a change of the plan's currency or allow_unpriced_models. Values come from a sequence, which
a rolled-back transaction never hands out twice. SQLite (the embedded default) has no triggers
and no cache: its price book is read on every request.
"""

from django.db import migrations, models

FORWARD = """
CREATE SEQUENCE billing_priceplan_version_seq;

CREATE FUNCTION billing_price_plan_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE billing_priceplan SET version = nextval('billing_priceplan_version_seq')
        WHERE id IN (SELECT plan_id FROM new_rows);
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE billing_priceplan SET version = nextval('billing_priceplan_version_seq')
        WHERE id IN (SELECT plan_id FROM old_rows);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER billing_price_version_insert AFTER INSERT ON billing_price
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION billing_price_plan_version_bump();
CREATE TRIGGER billing_price_version_update AFTER UPDATE ON billing_price
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION billing_price_plan_version_bump();
CREATE TRIGGER billing_price_version_delete AFTER DELETE ON billing_price
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION billing_price_plan_version_bump();

CREATE FUNCTION billing_priceplan_version_own() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := nextval('billing_priceplan_version_seq');
    RETURN NEW;
END $$;

CREATE TRIGGER billing_priceplan_version_own BEFORE UPDATE ON billing_priceplan FOR EACH ROW
    WHEN (OLD.currency IS DISTINCT FROM NEW.currency
          OR OLD.allow_unpriced_models IS DISTINCT FROM NEW.allow_unpriced_models)
    EXECUTE FUNCTION billing_priceplan_version_own();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS billing_priceplan_version_own ON billing_priceplan;
DROP FUNCTION IF EXISTS billing_priceplan_version_own();
DROP TRIGGER IF EXISTS billing_price_version_insert ON billing_price;
DROP TRIGGER IF EXISTS billing_price_version_update ON billing_price;
DROP TRIGGER IF EXISTS billing_price_version_delete ON billing_price;
DROP FUNCTION IF EXISTS billing_price_plan_version_bump();
DROP SEQUENCE IF EXISTS billing_priceplan_version_seq;
"""


def forward(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0003_quota_counter_held"),
    ]

    operations = [
        migrations.AddField(
            model_name="priceplan",
            name="version",
            field=models.BigIntegerField(default=0, editable=False),
        ),
        migrations.RunPython(forward, backward),
    ]
