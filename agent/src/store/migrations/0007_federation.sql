-- Schema 7: the region link's outbox. Heartbeat reports wait here, oldest first, until the region has
-- acknowledged them, so a report taken while the region was unreachable survives a killed or restarted
-- agent and arrives later with its original time. `seq` is the report's place in the site's sequence
-- (the column is authoritative: `body` is the report as taken, and the region's view of the sequence
-- may renumber the queue). The next number to hand out is kept in `settings` under
-- `federation.next_seq`, so numbers are never reused even when the queue is empty.

CREATE TABLE federation_outbox (
    seq  INTEGER PRIMARY KEY,
    body TEXT NOT NULL
) STRICT;
