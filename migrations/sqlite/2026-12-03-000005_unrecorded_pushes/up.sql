-- Roles this row's pushes may have written to Clerk without our knowing:
-- a bit per role (STUDENT 1, INSTRUCTOR 2, ADMIN 4), set just before a push
-- is sent and cleared once Clerk's answer or a read of Clerk is recorded
-- (or Clerk answered with an error). A replica that dies after Clerk
-- applied a push but before it recorded the answer leaves the bit set, so
-- the webhook of that push is known as a possible echo and cannot cancel a
-- newer admin change.
ALTER TABLE clerk_sync ADD COLUMN unrecorded_roles INTEGER NOT NULL DEFAULT 0;
