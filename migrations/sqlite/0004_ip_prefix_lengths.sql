-- The prefix lengths (in the 128-bit space: an IPv4 /24 is 120) that stored
-- IP ranges have or had. A block's look-up of the stored ranges that hold it
-- asks only for these lengths, a handful, instead of every shorter prefix.
-- Written with the ranges; never pruned (a length no longer stored costs a
-- look-up that finds nothing).
CREATE TABLE ip_prefix_lengths (
    prefix INTEGER PRIMARY KEY
);

-- Ranges stored before this table: every length, which is always right.
WITH RECURSIVE n(prefix) AS (SELECT 0 UNION ALL SELECT prefix + 1 FROM n WHERE prefix < 128)
INSERT INTO ip_prefix_lengths (prefix)
SELECT prefix FROM n WHERE EXISTS (SELECT 1 FROM ip_ranges);
