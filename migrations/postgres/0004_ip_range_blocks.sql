-- Each stored IP range also as a `cidr`, indexed with GiST (inet_ops), so
-- the ranges of other persons that overlap a run's pools are found with
-- `&&` in one indexed query instead of one look-up per covering prefix.
ALTER TABLE ip_ranges ADD COLUMN block cidr;
UPDATE ip_ranges SET block = cidr::cidr;
ALTER TABLE ip_ranges ALTER COLUMN block SET NOT NULL;
CREATE INDEX ip_ranges_by_block ON ip_ranges USING gist (block inet_ops);
