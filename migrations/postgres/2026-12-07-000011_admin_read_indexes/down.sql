DROP INDEX clerk_sync_unsettled_idx;
DROP INDEX clerk_sync_failing_idx;
DROP INDEX webhook_events_type_outcome_idx;
DROP INDEX webhook_events_outcome_idx;
DROP INDEX webhook_events_type_idx;
