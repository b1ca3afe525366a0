"""the catalogue

Revision ID: 0001
Revises:
Create Date: 2026-11-24 04:33:00.391194
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agency_objects',
    sa.Column('key', sa.String(length=512), nullable=False),
    sa.Column('station', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=True),
    sa.Column('recording', sa.Integer(), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('version', sa.String(length=128), nullable=False),
    sa.Column('retain_until_ns', sa.BigInteger(), nullable=True),
    sa.Column('legal_hold', sa.Boolean(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=True),
    sa.Column('pushed_ns', sa.BigInteger(), nullable=False),
    sa.Column('deleted_ns', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('agency_objects', schema=None) as batch_op:
        batch_op.create_index('ix_agency_objects_recording', ['recording'], unique=False)
        batch_op.create_index('ix_agency_objects_station_kind', ['station', 'kind'], unique=False)

    op.create_table('cases',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('case_no', sa.String(length=64), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('category', sa.Text(), nullable=False),
    sa.Column('department', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('opened_ns', sa.BigInteger(), nullable=False),
    sa.Column('opened_by', sa.String(length=64), nullable=False),
    sa.Column('closed_ns', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('case_no')
    )
    op.create_table('devices',
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('pubkey_pem', sa.Text(), nullable=False),
    sa.Column('officer_id', sa.String(length=32), nullable=True),
    sa.Column('label', sa.Text(), nullable=True),
    sa.Column('registered_at_ns', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('device_id')
    )
    op.create_table('dockings',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('station', sa.String(length=64), nullable=True),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('officer_id', sa.String(length=32), nullable=True),
    sa.Column('checked_in_ns', sa.BigInteger(), nullable=False),
    sa.Column('checked_out_ns', sa.BigInteger(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('used_from_ns', sa.BigInteger(), nullable=True),
    sa.Column('used_until_ns', sa.BigInteger(), nullable=True),
    sa.Column('head_seq', sa.BigInteger(), nullable=True),
    sa.Column('head_hash', sa.String(length=64), nullable=True),
    sa.Column('records', sa.Integer(), nullable=True),
    sa.Column('files_new', sa.Integer(), nullable=True),
    sa.Column('bytes_new', sa.BigInteger(), nullable=True),
    sa.Column('bytes_resumed', sa.BigInteger(), nullable=True),
    sa.Column('purged', sa.Integer(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('spool_ref', sa.String(length=160), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('spool_ref')
    )
    with op.batch_alter_table('dockings', schema=None) as batch_op:
        batch_op.create_index('ix_dockings_device', ['device_id'], unique=False)

    op.create_table('interruptions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('journal_seq', sa.BigInteger(), nullable=False),
    sa.Column('recording_id', sa.String(length=128), nullable=True),
    sa.Column('officer_id', sa.String(length=32), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('cause', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('wall_ns', sa.BigInteger(), nullable=False),
    sa.Column('needs_signoff', sa.Boolean(), nullable=False),
    sa.Column('signed_off_by', sa.String(length=64), nullable=True),
    sa.Column('signed_off_ns', sa.BigInteger(), nullable=True),
    sa.Column('signoff_note', sa.Text(), nullable=True),
    sa.Column('signoff_decision', sa.String(length=16), nullable=True),
    sa.Column('late', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('device_id', 'journal_seq')
    )
    op.create_table('recordings',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('recording_id', sa.String(length=128), nullable=False),
    sa.Column('station', sa.String(length=64), nullable=True),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('unit', sa.Text(), nullable=False),
    sa.Column('counterpart', sa.Text(), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('date', sa.String(length=8), nullable=False),
    sa.Column('officer_id', sa.String(length=32), nullable=True),
    sa.Column('start_wall_ns', sa.BigInteger(), nullable=True),
    sa.Column('end_wall_ns', sa.BigInteger(), nullable=True),
    sa.Column('time_quality', sa.String(length=16), nullable=True),
    sa.Column('segments', sa.Integer(), nullable=True),
    sa.Column('bytes', sa.BigInteger(), nullable=True),
    sa.Column('docking_id', sa.Integer(), nullable=True),
    sa.Column('ingested_ns', sa.BigInteger(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('retention_end_ns', sa.BigInteger(), nullable=True),
    sa.Column('purged_ns', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('device_id', 'recording_id')
    )
    with op.batch_alter_table('recordings', schema=None) as batch_op:
        batch_op.create_index('ix_recordings_officer', ['officer_id'], unique=False)
        batch_op.create_index('ix_recordings_start', ['start_wall_ns', 'id'], unique=False)

    op.create_table('stations',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('unit', sa.Text(), nullable=False),
    sa.Column('pubkey_pem', sa.Text(), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('created_ns', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('users',
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.Text(), nullable=False),
    sa.Column('officer_no', sa.String(length=32), nullable=True),
    sa.Column('unit', sa.Text(), nullable=False),
    sa.Column('roles', sa.Text(), nullable=False),
    sa.Column('supervisor', sa.String(length=64), nullable=True),
    sa.Column('password_hash', sa.Text(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_ns', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['supervisor'], ['users.username'], ),
    sa.PrimaryKeyConstraint('username'),
    sa.UniqueConstraint('officer_no')
    )
    op.create_table('access_requests',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('recording', sa.Integer(), nullable=False),
    sa.Column('requester', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=8), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('requested_ns', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('decided_by', sa.String(length=64), nullable=True),
    sa.Column('decided_ns', sa.BigInteger(), nullable=True),
    sa.Column('decision_note', sa.Text(), nullable=True),
    sa.Column('valid_until_ns', sa.BigInteger(), nullable=True),
    sa.Column('revoked_by', sa.String(length=64), nullable=True),
    sa.Column('revoked_ns', sa.BigInteger(), nullable=True),
    sa.Column('revoke_note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['recording'], ['recordings.id'], ),
    sa.ForeignKeyConstraint(['requester'], ['users.username'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('accesses',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('recording', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=8), nullable=False),
    sa.Column('granted', sa.Boolean(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=True),
    sa.Column('approver', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('at_ns', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['recording'], ['recordings.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('assignments',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('officer_id', sa.String(length=32), nullable=False),
    sa.Column('officer_unit', sa.Text(), nullable=False),
    sa.Column('checked_out_ns', sa.BigInteger(), nullable=False),
    sa.Column('checked_out_by', sa.String(length=64), nullable=False),
    sa.Column('checked_in_ns', sa.BigInteger(), nullable=True),
    sa.Column('checked_in_by', sa.String(length=64), nullable=True),
    sa.Column('assignment', sa.Text(), nullable=False),
    sa.Column('device_ack', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.device_id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.create_index('ix_assignments_device', ['device_id'], unique=False)

    op.create_table('audit_entries',
    sa.Column('station', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('type', sa.String(length=48), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('wall_ns', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('line', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['station'], ['stations.name'], ),
    sa.PrimaryKeyConstraint('station', 'seq')
    )
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.create_index('ix_audit_actor', ['actor'], unique=False)
        batch_op.create_index('ix_audit_subject', ['subject'], unique=False)

    op.create_table('exports',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=True),
    sa.Column('directory', sa.Text(), nullable=False),
    sa.Column('maker', sa.Text(), nullable=False),
    sa.Column('extractor', sa.Text(), nullable=False),
    sa.Column('extracted_ns', sa.BigInteger(), nullable=False),
    sa.Column('copies', sa.Integer(), nullable=False),
    sa.Column('recordings', sa.Text(), nullable=False),
    sa.Column('manifest_sha256', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('holds',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('recording', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('placed_by', sa.String(length=64), nullable=False),
    sa.Column('placed_ns', sa.BigInteger(), nullable=False),
    sa.Column('released_by', sa.String(length=64), nullable=True),
    sa.Column('released_ns', sa.BigInteger(), nullable=True),
    sa.Column('release_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['recording'], ['recordings.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('holds', schema=None) as batch_op:
        batch_op.create_index('ix_holds_recording', ['recording'], unique=False)

    op.create_table('labels',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('recording', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('current', sa.Boolean(), nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=True),
    sa.Column('activity', sa.Text(), nullable=True),
    sa.Column('category', sa.Text(), nullable=False),
    sa.Column('counterpart', sa.Text(), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('place', sa.Text(), nullable=False),
    sa.Column('range_start_ns', sa.BigInteger(), nullable=True),
    sa.Column('range_end_ns', sa.BigInteger(), nullable=True),
    sa.Column('labelled_by', sa.String(length=64), nullable=False),
    sa.Column('labelled_ns', sa.BigInteger(), nullable=False),
    sa.Column('correction_reason', sa.Text(), nullable=True),
    sa.Column('superseded_by', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ),
    sa.ForeignKeyConstraint(['recording'], ['recordings.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.create_index('ix_labels_recording', ['recording'], unique=False)

    op.create_table('purges',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('recording', sa.Integer(), nullable=False),
    sa.Column('purged_by', sa.String(length=64), nullable=False),
    sa.Column('confirmed_by', sa.String(length=64), nullable=False),
    sa.Column('purged_ns', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('retention_end_ns', sa.BigInteger(), nullable=False),
    sa.Column('files', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['recording'], ['recordings.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('recording')
    )
    op.create_table('quarantined_files',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('docking_id', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('recording_id', sa.Text(), nullable=True),
    sa.Column('seg_index', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('expected_sha256', sa.String(length=64), nullable=True),
    sa.Column('expected_size', sa.BigInteger(), nullable=True),
    sa.Column('found_sha256', sa.String(length=64), nullable=True),
    sa.Column('found_size', sa.BigInteger(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('quarantine_dir', sa.Text(), nullable=True),
    sa.Column('quarantined_ns', sa.BigInteger(), nullable=False),
    sa.Column('resolved_docking_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['docking_id'], ['dockings.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('receipts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('docking_id', sa.Integer(), nullable=False),
    sa.Column('counter', sa.BigInteger(), nullable=False),
    sa.Column('nonce', sa.Text(), nullable=False),
    sa.Column('head_seq', sa.BigInteger(), nullable=False),
    sa.Column('head_hash', sa.String(length=64), nullable=False),
    sa.Column('files', sa.Integer(), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('sent_ns', sa.BigInteger(), nullable=False),
    sa.Column('response', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['docking_id'], ['dockings.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('device_id', 'counter')
    )
    op.create_table('segments',
    sa.Column('recording', sa.Integer(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('start_wall_ns', sa.BigInteger(), nullable=False),
    sa.Column('end_wall_ns', sa.BigInteger(), nullable=False),
    sa.Column('time_quality', sa.String(length=16), nullable=False),
    sa.Column('journal_seq', sa.BigInteger(), nullable=False),
    sa.Column('present', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['recording'], ['recordings.id'], ),
    sa.PrimaryKeyConstraint('recording', 'index')
    )
    op.create_table('web_sessions',
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('csrf', sa.String(length=64), nullable=False),
    sa.Column('created_ns', sa.BigInteger(), nullable=False),
    sa.Column('last_seen_ns', sa.BigInteger(), nullable=False),
    sa.Column('ended_ns', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['username'], ['users.username'], ),
    sa.PrimaryKeyConstraint('token_sha256')
    )


def downgrade() -> None:
    op.drop_table('web_sessions')
    op.drop_table('segments')
    op.drop_table('receipts')
    op.drop_table('quarantined_files')
    op.drop_table('purges')
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.drop_index('ix_labels_recording')

    op.drop_table('labels')
    with op.batch_alter_table('holds', schema=None) as batch_op:
        batch_op.drop_index('ix_holds_recording')

    op.drop_table('holds')
    op.drop_table('exports')
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_subject')
        batch_op.drop_index('ix_audit_actor')

    op.drop_table('audit_entries')
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.drop_index('ix_assignments_device')

    op.drop_table('assignments')
    op.drop_table('accesses')
    op.drop_table('access_requests')
    op.drop_table('users')
    op.drop_table('stations')
    with op.batch_alter_table('recordings', schema=None) as batch_op:
        batch_op.drop_index('ix_recordings_start')
        batch_op.drop_index('ix_recordings_officer')

    op.drop_table('recordings')
    op.drop_table('interruptions')
    with op.batch_alter_table('dockings', schema=None) as batch_op:
        batch_op.drop_index('ix_dockings_device')

    op.drop_table('dockings')
    op.drop_table('devices')
    op.drop_table('cases')
    with op.batch_alter_table('agency_objects', schema=None) as batch_op:
        batch_op.drop_index('ix_agency_objects_station_kind')
        batch_op.drop_index('ix_agency_objects_recording')

    op.drop_table('agency_objects')
