/**
 * The Helm chart (deploy/helm/minkms), offline: `helm lint` and `helm template` for every values
 * file in its ci/ directory, each rendered stream strictly decoded into the Kubernetes API types
 * and cross-checked by deploy/helm/validate (Go, k8s.io/api), the configuration each renders
 * accepted by minkms's own config validator, and bad values refused. No cluster runs here (kind
 * and k3s need a container engine): what a cluster would add is listed in docs/deploy.md.
 *
 * helm is built once from the Go module proxy (`go install helm.sh/helm/v3/cmd/helm@VERSION`)
 * into the cache, like MinIO for the e2e suite; `$HELM_BIN` or a helm v3 on PATH is used first.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT } from '../helpers/server.js';
import { cacheDir, executable, goBuild, onPath } from '../helpers/tools.js';
import { validateConfig } from '../../src/config/config.js';

export const HELM_VERSION = 'v3.22.0';
const CHART = join(REPO_ROOT, 'deploy/helm/minkms');
const VALIDATOR = join(REPO_ROOT, 'deploy/helm/validate');
const KUBE_VERSION = '1.31.0';
const log = (m: string) => process.stderr.write(`${m}\n`);

let helm: string;
let validator: string;

async function helmBinary(): Promise<string> {
  const given = process.env.HELM_BIN;
  if (given) {
    assert.ok(executable(given), `HELM_BIN=${given} is not executable`);
    return given;
  }
  const system = onPath('helm');
  if (system && /^v3\./.test(spawnSync(system, ['version', '--short'], { encoding: 'utf8' }).stdout.trim())) return system;
  return goBuild(join(cacheDir(), `helm-${HELM_VERSION}`), `helm.sh/helm/v3/cmd/helm@${HELM_VERSION}`, log);
}

/** The validator, rebuilt whenever its sources change (the cache name carries their hash). */
async function validatorBinary(): Promise<string> {
  const h = createHash('sha256');
  for (const f of ['go.mod', 'go.sum', 'main.go']) h.update(readFileSync(join(VALIDATOR, f)));
  return goBuild(join(cacheDir(), `helm-validate-${h.digest('hex').slice(0, 16)}`), VALIDATOR, log);
}

function run(bin: string, args: string[], input?: string) {
  const r = spawnSync(bin, args, { encoding: 'utf8', input, timeout: 120_000, maxBuffer: 64 << 20 });
  return { code: r.status ?? -1, out: r.stdout ?? '', err: (r.stderr ?? '') + (r.error ? String(r.error) : '') };
}

function render(values: string[], set: string[] = []) {
  return run(helm, [
    'template',
    'kms',
    CHART,
    '--namespace',
    'security',
    '--kube-version',
    KUBE_VERSION,
    ...values.flatMap((v) => ['-f', v]),
    ...set.flatMap((s) => ['--set', s]),
  ]);
}

const valuesFiles = readdirSync(join(CHART, 'ci'))
  .filter((f) => f.endsWith('-values.yaml'))
  .sort()
  .map((f) => join(CHART, 'ci', f));

/** The rendered objects of a stream. */
function objects(stream: string): any[] {
  return parseAllDocuments(stream)
    .map((d) => d.toJS())
    .filter((o) => o);
}

describe('Helm chart', { timeout: 60 * 60_000 }, () => {
  // The first run builds helm (about 5 CPU minutes) and the validator.
  before(
    async () => {
      [helm, validator] = [await helmBinary(), await validatorBinary()];
    },
    { timeout: 50 * 60_000 },
  );

  test('ci/ holds several values files', () => {
    assert.ok(valuesFiles.length >= 4, valuesFiles.join(', '));
  });

  for (const file of valuesFiles) {
    const name = file.slice(CHART.length + 1);
    test(`${name}: helm lint, helm template, strict decoding into the Kubernetes types, the rendered config`, () => {
      const lint = run(helm, ['lint', CHART, '--strict', '-f', file, '--kube-version', KUBE_VERSION]);
      assert.equal(lint.code, 0, lint.out + lint.err);
      assert.match(lint.out, /1 chart\(s\) linted, 0 chart\(s\) failed/);
      const r = render([file]);
      assert.equal(r.code, 0, r.err);
      const v = run(validator, ['-name', name], r.out);
      assert.equal(v.code, 0, `validate:\n${v.out}${v.err}`);
      assert.match(v.out, /^ci\/.*: \d+ objects valid \(/);
      log(v.out.trim());

      const objs = objects(r.out);
      const config = objs.find((o) => o.kind === 'Secret' && o.metadata.name.endsWith('-config'));
      assert.ok(config, 'a config Secret');
      // The server would accept it: minkms's own validator, as at start.
      const c = validateConfig(parseAllDocuments(config.stringData['config.yaml'])[0]!.toJS(), '/etc/minkms/config');
      assert.equal(c.store.backend, 'etcd');
      const sts = objs.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'kms-minkms')!;
      const pod = sts.spec.template.spec;
      const kms = pod.containers[0];
      assert.deepEqual(
        [kms.livenessProbe.httpGet, kms.readinessProbe.httpGet],
        [
          { path: '/v1/health/live', port: 'https', scheme: 'HTTPS' },
          { path: '/v1/health/ready', port: 'https', scheme: 'HTTPS' },
        ],
      );
      assert.equal(pod.securityContext.runAsNonRoot, true);
      assert.equal(kms.securityContext.readOnlyRootFilesystem, true);
      assert.deepEqual(kms.securityContext.capabilities.drop, ['ALL']);
      assert.ok(kms.args.includes('$(POD_NAME).kms-minkms-hl.$(POD_NAMESPACE).svc.cluster.local:7373'), kms.args.join(' '));
      const hsmEnv = kms.env.find((e: any) => e.name === 'MINIO_KMS_HSM_KEY');
      if (c.hsm.minkms) assert.ok(!hsmEnv || hsmEnv.valueFrom.secretKeyRef, 'the soft key only from a Secret');
      else assert.equal(hsmEnv.valueFrom.secretKeyRef.key, 'hsm');
      const services = objs.filter((o) => o.kind === 'Service' && o.metadata.name.startsWith('kms-minkms'));
      assert.ok(
        services.some((s) => s.spec.clusterIP === 'None' && s.metadata.name === 'kms-minkms-hl'),
        'a headless service',
      );
      assert.ok(
        services.some((s) => s.metadata.name === 'kms-minkms' && s.spec.clusterIP !== 'None'),
        'a client service',
      );
    });
  }

  test('the KMS chain values: no soft key, the external KMS and its CA in the config', () => {
    const r = render([join(CHART, 'ci/kms-chain-values.yaml')]);
    const objs = objects(r.out);
    const kms = objs.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'kms-minkms')!.spec.template.spec.containers[0];
    assert.ok(!kms.env.some((e: any) => e.name === 'MINIO_KMS_HSM_KEY'));
    assert.ok(kms.volumeMounts.some((m: any) => m.mountPath === '/etc/minkms/hsm-ca'));
    const config = objs.find((o) => o.kind === 'Secret' && o.metadata.name === 'kms-minkms-config')!.stringData['config.yaml'];
    const c = validateConfig(parseAllDocuments(config)[0]!.toJS(), '/');
    assert.equal(c.hsm.minkms?.ca, '/etc/minkms/hsm-ca/ca.crt');
    assert.equal(c.hsm.minkms?.server.length, 2);
  });

  test('bad values are refused by the schema or the chart, with the reason', () => {
    const cases: Array<[string[], RegExp]> = [
      [['config.heartbeat=500'], /config\/heartbeat.*got number, want string/],
      [['config.heartbeat=500x'], /config\/heartbeat.*does not match pattern/],
      [['tsl.enabled=true'], /additional properties 'tsl' not allowed/],
      [['adminIdentity=k1:abc'], /adminIdentity/],
      [['config.metrics.identities[0]=prometheus'], /metrics\/identities\/0.*does not match pattern/],
      [['hsm.soft=false'], /no HSM: keep hsm\.soft .* or enable hsm\.minkms/],
      [['etcd.replicaCount=2'], /etcd\.replicaCount must be odd/],
      [['tls.certManager.enabled=true'], /tls\.certManager\.issuerRef\.name is required/],
      [
        ['hsm.minkms.enabled=true', 'hsm.minkms.servers[0]=a:7373', 'hsm.minkms.enclave=e', 'hsm.minkms.key=k'],
        /hsm\.minkms\.apiKey is required/,
      ],
    ];
    for (const [set, want] of cases) {
      const r = render([], set);
      assert.notEqual(r.code, 0, `--set ${set.join(' ')} rendered`);
      assert.match(r.err, want, `--set ${set.join(' ')}`);
    }
  });

  test('the validator refuses broken manifests: unknown field, bad quantity, mount without volume, selector mismatch', () => {
    const good = render([join(CHART, 'ci/dev-values.yaml')]).out;
    const broken: Array<[string, (s: string) => string, RegExp]> = [
      [
        'unknown field',
        (s) => s.replace('podManagementPolicy: Parallel', 'podManagementPolicy: Parallel\n  replica: 3'),
        /StatefulSet: .*unknown field "replica"/,
      ],
      ['bad quantity', (s) => s.replace('storage: 1Gi', 'storage: one-gig'), /quantities must match/],
      [
        'mount without volume',
        (s) => s.replace('mountPath: /tmp', 'mountPath: /tmp\n            - name: nowhere\n              mountPath: /x'),
        /mounts "nowhere", which is no volume/,
      ],
      [
        'selector mismatch',
        (s) => s.replace(/(type: RollingUpdate\n {2}selector:\n {4}matchLabels:\n {6}app\.kubernetes\.io\/name: )minkms/, '$1other'),
        /does not select the pod template/,
      ],
      [
        'probe port',
        (s) => s.replace('port: https\n              scheme: HTTPS', 'port: http\n              scheme: HTTPS'),
        /uses port "http", which the container does not declare/,
      ],
      ['unknown kind', (s) => `${s}\n---\napiVersion: v1\nkind: Gadget\nmetadata:\n  name: x\n`, /unknown or unsupported kind "Gadget"/],
    ];
    for (const [what, mutate, want] of broken) {
      const text = mutate(good);
      assert.notEqual(text, good, `${what}: the mutation applies`);
      const v = run(validator, ['-name', what], text);
      assert.equal(v.code, 1, `${what}: accepted\n${v.out}`);
      assert.match(v.err, want, what);
    }
  });
});
