"""PostgreSQL triggers: an issued invoice, its lines and credit notes never change.

- invoicing_invoice: a draft may change freely; an issued row may only move finalized -> paid
  or finalized -> void (status, paid_at, voided_at, void_reason, updated_at); it is never deleted.
- invoicing_invoiceline: no INSERT, UPDATE or DELETE once the invoice is issued.
- invoicing_creditnote: no UPDATE or DELETE, ever.
SQLite (the embedded default) has no such triggers; the model and service guards still apply.
"""

from django.db import migrations

FORWARD = r"""
CREATE OR REPLACE FUNCTION invoicing_invoice_immutable() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'invoice % is %; it cannot be deleted', OLD.number, OLD.status
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status = 'draft' THEN
        RETURN NEW;
    END IF;
    IF OLD.status = 'finalized' AND NEW.status IN ('paid', 'void')
       AND (to_jsonb(NEW) - 'status' - 'paid_at' - 'voided_at' - 'void_reason' - 'updated_at')
           = (to_jsonb(OLD) - 'status' - 'paid_at' - 'voided_at' - 'void_reason' - 'updated_at') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'invoice % is %; it cannot be changed', OLD.number, OLD.status
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER invoicing_invoice_immutable
    BEFORE UPDATE OR DELETE ON invoicing_invoice
    FOR EACH ROW EXECUTE FUNCTION invoicing_invoice_immutable();

CREATE OR REPLACE FUNCTION invoicing_line_immutable() RETURNS trigger AS $$
DECLARE
    parent_status text;
    parent_id bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        parent_id := NEW.invoice_id;
    ELSE
        parent_id := OLD.invoice_id;
    END IF;
    SELECT status INTO parent_status FROM invoicing_invoice WHERE id = parent_id;
    IF parent_status IS NOT NULL AND parent_status <> 'draft' THEN
        RAISE EXCEPTION 'lines of invoice % (%) cannot be changed', parent_id, parent_status
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.invoice_id <> OLD.invoice_id THEN
        SELECT status INTO parent_status FROM invoicing_invoice WHERE id = NEW.invoice_id;
        IF parent_status <> 'draft' THEN
            RAISE EXCEPTION 'lines cannot move to issued invoice %', NEW.invoice_id
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER invoicing_line_immutable
    BEFORE INSERT OR UPDATE OR DELETE ON invoicing_invoiceline
    FOR EACH ROW EXECUTE FUNCTION invoicing_line_immutable();

CREATE OR REPLACE FUNCTION invoicing_credit_note_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'credit note % is issued; it cannot be changed', OLD.number
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER invoicing_credit_note_immutable
    BEFORE UPDATE OR DELETE ON invoicing_creditnote
    FOR EACH ROW EXECUTE FUNCTION invoicing_credit_note_immutable();
"""

BACKWARD = r"""
DROP TRIGGER IF EXISTS invoicing_credit_note_immutable ON invoicing_creditnote;
DROP FUNCTION IF EXISTS invoicing_credit_note_immutable();
DROP TRIGGER IF EXISTS invoicing_line_immutable ON invoicing_invoiceline;
DROP FUNCTION IF EXISTS invoicing_line_immutable();
DROP TRIGGER IF EXISTS invoicing_invoice_immutable ON invoicing_invoice;
DROP FUNCTION IF EXISTS invoicing_invoice_immutable();
"""


def forward(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("invoicing", "0001_initial")]

    operations = [migrations.RunPython(forward, backward)]
