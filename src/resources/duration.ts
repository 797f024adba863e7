/**
 * ISO-8601 durations as Knative's DeliverySpec writes them (`PT0.2S`, `PT1M`, `P1DT2H`).
 * @module
 */

const ISO_DURATION =
  /^P(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$/;

/**
 * Parses an ISO-8601 duration into milliseconds, or returns undefined when it is not one.
 * Years and months are not accepted: their length is not fixed.
 *
 * @example
 * parseDuration('PT0.5S'); // 500
 */
export function parseDuration(s: string): number | undefined {
  const m = ISO_DURATION.exec(s);
  if (!m || s === 'P' || s.endsWith('T')) return undefined;
  const [, w, d, h, min, sec] = m;
  const n = (x: string | undefined) => (x === undefined ? 0 : Number(x));
  return Math.round(((((n(w) * 7 + n(d)) * 24 + n(h)) * 60 + n(min)) * 60 + n(sec)) * 1000);
}
