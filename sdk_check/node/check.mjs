// Drives a Bento API (the bento-dlt emulator) with Bento's official Node SDK, one phase at a time.
//
// Usage: node check.mjs <phase>, with BENTO_BASE_URL, BENTO_SITE_UUID, BENTO_PUBLISHABLE_KEY,
// BENTO_SECRET_KEY and SDK_CHECK_PLAN (JSON: the emails, tags and fields to use) in the environment.
// It prints one JSON line per SDK call: {"call", "result"} or {"call", "error": {"name", "message"}}.
// It judges nothing: the Python runner (sdk_check/run.py) checks each answer against the emulator's store.
import { Analytics } from '@bentonow/bento-node-sdk';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const bento = new Analytics({
  siteUuid: env('BENTO_SITE_UUID'),
  authentication: { publishableKey: env('BENTO_PUBLISHABLE_KEY'), secretKey: env('BENTO_SECRET_KEY') },
  clientOptions: { baseUrl: env('BENTO_BASE_URL'), timeout: 20000 },
});
const plan = JSON.parse(env('SDK_CHECK_PLAN'));
const v1 = bento.V1;

// Each phase is a list of [call name, function]; the names are the ones the runner expects.
const phases = {
  read: [
    ['Tags.getTags', () => v1.Tags.getTags()],
    ['Fields.getFields', () => v1.Fields.getFields()],
    ['Broadcasts.getBroadcasts', () => v1.Broadcasts.getBroadcasts()],
    ['Stats.getSiteStats', () => v1.Stats.getSiteStats()],
    ['Stats.getSegmentStats', () => v1.Stats.getSegmentStats(plan.segment_id)],
    ['Subscribers.getSubscribers(email)', () => v1.Subscribers.getSubscribers({ email: plan.seeded.email })],
    ['Subscribers.getSubscribers(uuid)', () => v1.Subscribers.getSubscribers({ uuid: plan.seeded.uuid })],
    ['Subscribers.getSubscribers(unknown)', () => v1.Subscribers.getSubscribers({ email: plan.emails.unknown })],
    ['Experimental.validateEmail', () => v1.Experimental.validateEmail({ email: plan.emails.unknown })],
  ],
  write: [
    ['Tags.createTag', () => v1.Tags.createTag({ name: plan.new_tag })],
    ['Fields.createField', () => v1.Fields.createField({ key: plan.new_field })],
    ['Subscribers.createSubscriber', () => v1.Subscribers.createSubscriber({ email: plan.emails.created })],
    ['Batch.importSubscribers', () => v1.Batch.importSubscribers({
      subscribers: [
        { email: plan.emails.imported, first_name: 'Ada', plan: 'pro', tags: plan.import_tags.join(',') },
        { email: plan.emails.imported_second, first_name: 'Grace' },
      ],
    })],
    ['upsertSubscriber', () => v1.upsertSubscriber({
      email: plan.emails.upserted, fields: { company: 'Analytical Engines' }, tags: plan.import_tags[0],
    })],
    ['Batch.importEvents', () => v1.Batch.importEvents({
      events: [{ type: '$sdk_check', email: plan.emails.evented, fields: { plan: 'team' }, details: { step: 1 } }],
    })],
    ['track', () => v1.track({ type: '$signed_up', email: plan.emails.tracked, details: { source: 'sdk' } })],
    ['trackPurchase', () => v1.trackPurchase({
      email: plan.emails.purchaser,
      purchaseDetails: { unique: { key: 'order-1' }, value: { amount: 1999, currency: 'USD' } },
    })],
    ['addSubscriber', () => v1.addSubscriber({ email: plan.emails.added, fields: { source: 'sdk' } })],
    ['tagSubscriber', () => v1.tagSubscriber({ email: plan.emails.tagged, tagName: plan.event_tag })],
    ['updateFields', () => v1.updateFields({ email: plan.emails.field_updated, fields: { tier: 'gold' } })],
    ['removeSubscriber', () => v1.removeSubscriber({ email: plan.emails.removed })],
    ['Commands.addTag', () => v1.Commands.addTag({ email: plan.emails.command_tagged, tagName: plan.command_tag })],
    ['Commands.removeTag', () => v1.Commands.removeTag({ email: plan.emails.untagged, tagName: plan.preset_tag })],
    ['Commands.addField', () => v1.Commands.addField({
      email: plan.emails.command_field, field: { key: 'favourite_colour', value: 'teal' },
    })],
    ['Commands.removeField', () => v1.Commands.removeField({
      email: plan.emails.field_removed, fieldName: plan.preset_field,
    })],
    ['Commands.subscribe', () => v1.Commands.subscribe({ email: plan.emails.resubscribed })],
    ['Commands.unsubscribe', () => v1.Commands.unsubscribe({ email: plan.emails.unsubscribed })],
    ['Commands.changeEmail', () => v1.Commands.changeEmail({
      oldEmail: plan.emails.renamed_from, newEmail: plan.emails.renamed_to,
    })],
    ['Batch.sendTransactionalEmails', () => v1.Batch.sendTransactionalEmails({
      emails: [{
        to: plan.emails.mailed, from: plan.author, subject: 'Your receipt', html_body: '<p>Hi {{ name }}</p>',
        transactional: true, personalizations: { name: 'Ada' },
      }],
    })],
    ['Broadcasts.createEmails', () => v1.Broadcasts.createEmails([{
      to: plan.emails.mailed_second, from: plan.author, subject: 'Welcome', html_body: '<p>Welcome</p>',
      transactional: true,
    }])],
    ['Batch.sendTransactionalEmails(unknown author)', () => v1.Batch.sendTransactionalEmails({
      emails: [{
        to: plan.emails.not_mailed, from: plan.emails.unknown, subject: 'Nope', html_body: '<p>No</p>',
        transactional: true,
      }],
    })],
  ],
  readback: [
    ['Subscribers.getSubscribers(imported)', () => v1.Subscribers.getSubscribers({ email: plan.emails.imported })],
    ['Tags.getTags(after writes)', () => v1.Tags.getTags()],
  ],
  unauthorized: [
    ['Tags.getTags(wrong keys)', () => v1.Tags.getTags()],
    ['Batch.importSubscribers(wrong keys)', () => v1.Batch.importSubscribers({
      subscribers: [{ email: plan.emails.refused }],
    })],
  ],
  rate_limited: [
    ['Tags.getTags(within budget)', () => v1.Tags.getTags()],
    ['Tags.getTags(over budget)', () => v1.Tags.getTags()],
    ['Batch.importEvents(within budget)', () => v1.Batch.importEvents({
      events: [{ type: '$sdk_check', email: plan.emails.within_budget }],
    })],
    ['Batch.importEvents(over budget)', () => v1.Batch.importEvents({
      events: [{ type: '$sdk_check', email: plan.emails.over_budget }],
    })],
  ],
};

const phase = process.argv[2];
const calls = phases[phase];
if (!calls) {
  console.error(`unknown phase ${JSON.stringify(phase)}; expected one of ${Object.keys(phases).join(', ')}`);
  process.exit(2);
}
for (const [call, run] of calls) {
  try {
    const result = await run();
    console.log(JSON.stringify({ call, result: result === undefined ? null : result }));
  } catch (error) {
    const name = error instanceof Error ? error.name : typeof error;
    const message = error instanceof Error ? error.message : String(error);
    console.log(JSON.stringify({ call, error: { name, message } }));
  }
}
