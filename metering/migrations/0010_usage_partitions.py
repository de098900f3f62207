"""Usage events move to monthly partitions (PostgreSQL); their exactly-once key to UsageRequest.

The conversion keeps every row (copied once, in one transaction) and does not name the usage
table's columns: the partitioned table is created LIKE the old one (columns, defaults, checks,
identity), and its indexes are rebuilt from the old table's catalog, so columns or indexes
that other migrations add before or after this one come along. What partitioning forbids is
left out: the unique (tenant_id, request_id), whose job UsageRequest takes over (backfilled
here from the events), and a primary key without the partition key (it becomes (id,
occurred_at)). SQLite keeps one plain table; only the storage DDL differs.
"""

import datetime as dt

import django.db.models.deletion
from django.db import migrations, models

TABLE = "metering_usageevent"
OLD = "metering_usageevent_unpartitioned"
PARTITIONS_AHEAD = 3  # months after the current one created now; metering.partitions keeps it so


def backfill_keys(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO metering_usagerequest (tenant_id, request_id, body_hash, event_id) "
            f"SELECT tenant_id, request_id, body_hash, id FROM {TABLE}"
        )


def _set_aside(cursor):
    """Rename the usage table to OLD; return the definitions of its plain indexes (dropped here)."""
    cursor.execute(
        "SELECT ic.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class ic ON ic.oid = i.indexrelid "
        "WHERE i.indrelid = %s::regclass AND NOT i.indisprimary AND NOT i.indisunique",
        [TABLE],
    )
    indexes = cursor.fetchall()
    for name, _ in indexes:
        cursor.execute(f'DROP INDEX "{name}"')  # rebuilt on the new table after the copy
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [TABLE])
    (sequence,) = cursor.fetchone()
    cursor.execute("SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'", [TABLE])
    (primary_key,) = cursor.fetchone()
    cursor.execute(f'ALTER TABLE {TABLE} RENAME CONSTRAINT "{primary_key}" TO {OLD}_pkey')
    cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {OLD}")
    cursor.execute(f"ALTER SEQUENCE {sequence} RENAME TO {OLD}_id_seq")
    return [definition for _, definition in indexes]


def _like_old(partitioned):
    tail = " PARTITION BY RANGE (occurred_at)" if partitioned else ""
    return (
        f"CREATE TABLE {TABLE} (LIKE {OLD} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY "
        f"INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS){tail}"
    )


def _copy_back(cursor, indexes, primary_key):
    cursor.execute(f"INSERT INTO {TABLE} SELECT * FROM {OLD}")
    cursor.execute(
        f"SELECT setval(pg_get_serial_sequence('{TABLE}', 'id'), "
        f"GREATEST((SELECT max(id) FROM {OLD}), (SELECT last_value FROM {OLD}_id_seq), 1))"
    )
    cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY ({primary_key})")
    cursor.execute(f"DROP TABLE {OLD} CASCADE")
    for definition in indexes:
        cursor.execute(definition)
    cursor.execute(f"ANALYZE {TABLE}")


def _relkind(cursor):
    cursor.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [TABLE])
    return cursor.fetchone()[0]


def unpartition_usage(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        if _relkind(cursor) != "p":
            return
        indexes = _set_aside(cursor)
        cursor.execute(_like_old(partitioned=False))
        _copy_back(cursor, indexes, "id")


def partition_usage(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        if _relkind(cursor) == "p":
            return
        indexes = _set_aside(cursor)
        cursor.execute(_like_old(partitioned=True))
        # One partition per month holding rows, the current month and a few ahead; the rest
        # (a stray far-off time) lands in the default partition until its month is created.
        cursor.execute(
            "SELECT m::date FROM generate_series("
            f" date_trunc('month', LEAST((SELECT min(occurred_at) FROM {OLD}), now()) AT TIME ZONE 'UTC'),"
            f" date_trunc('month', now() AT TIME ZONE 'UTC') + interval '{PARTITIONS_AHEAD} months',"
            " interval '1 month') AS m"
        )
        for (month,) in cursor.fetchall():
            following = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
            cursor.execute(
                f"CREATE TABLE {TABLE}_p{month:%Y_%m} PARTITION OF {TABLE} "
                f"FOR VALUES FROM ('{month.isoformat()} 00:00:00+00') TO ('{following.isoformat()} 00:00:00+00')"
            )
        cursor.execute(f"CREATE TABLE {TABLE}_default PARTITION OF {TABLE} DEFAULT")
        _copy_back(cursor, indexes, "id, occurred_at")


class Migration(migrations.Migration):

    dependencies = [
        ('metering', '0009_relay_fields'),
    ]

    operations = [
        migrations.CreateModel(
            name='ArchivedUsageTotal',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('tenant_id', models.BigIntegerField()),
                ('basis', models.CharField(choices=[('occurred', 'Occurred'), ('received', 'Received')], max_length=8)),
                ('month', models.DateField()),
                ('requests', models.BigIntegerField()),
                ('unpriced_requests', models.BigIntegerField()),
                ('cost', models.DecimalField(decimal_places=18, max_digits=38)),
            ],
        ),
        migrations.CreateModel(
            name='UsageArchive',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('period', models.DateField(unique=True)),
                ('status', models.CharField(choices=[('exported', 'Exported'), ('verified', 'Verified'), ('dropped', 'Dropped')], max_length=16)),
                ('file_name', models.CharField(max_length=300)),
                ('sha256', models.CharField(max_length=64)),
                ('rows', models.BigIntegerField()),
                ('file_bytes', models.BigIntegerField()),
                ('table_bytes', models.BigIntegerField()),
                ('manifest', models.JSONField()),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('dropped_at', models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.CreateModel(
            name='UsageRequest',
            fields=[
                ('pk', models.CompositePrimaryKey('tenant_id', 'request_id', blank=True, editable=False, primary_key=True, serialize=False)),
                ('tenant_id', models.BigIntegerField()),
                ('request_id', models.CharField(max_length=128)),
                ('event_id', models.BigIntegerField(null=True)),
                ('body_hash', models.CharField(max_length=64)),
            ],
        ),
        migrations.RunPython(backfill_keys, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name='usageevent',
            name='usage_event_unique_request',
        ),
        migrations.RunPython(partition_usage, unpartition_usage),
        migrations.AddField(
            model_name='archivedusagetotal',
            name='archive',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='totals', to='metering.usagearchive'),
        ),
        migrations.AddIndex(
            model_name='archivedusagetotal',
            index=models.Index(fields=['tenant_id', 'basis', 'month'], name='archived_total_lookup'),
        ),
        migrations.AddConstraint(
            model_name='archivedusagetotal',
            constraint=models.UniqueConstraint(fields=('archive', 'tenant_id', 'basis', 'month'), name='archived_total_unique'),
        ),
    ]
