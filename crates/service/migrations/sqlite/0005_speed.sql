-- Speed and time left of a running job (issue 13): frames per second over the attempt so far
-- and the estimated seconds to finish, written with each heartbeat; `fps` of a completed job is
-- its average. NULL until the engine has reported frames.
ALTER TABLE jobs ADD COLUMN fps DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN eta_seconds DOUBLE PRECISION;
