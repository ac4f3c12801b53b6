// Command kubelet-sim plays kubelet's part for one CSI inline volume of one
// pod, the way kubelet v1.36 does it (pkg/volume/csi/csi_mounter.go), so the
// end-to-end tests can drive the real Secrets Store CSI Driver without a node:
//
//	kubelet-sim publish   --kubeconfig F --endpoint unix:///…/csi.sock --pods-dir D --namespace NS --pod P --volume V [--timeout 2m]
//	kubelet-sim unpublish --kubeconfig F --endpoint unix:///…/csi.sock --pods-dir D --namespace NS --pod P --volume V [--timeout 2m]
//
// publish reads the Pod and its CSI volume, the CSIDriver object (podInfoOnMount,
// tokenRequests) and the nodePublishSecretRef Secret; mints the service-account
// tokens with TokenRequest (bound to the pod, one per audience); and calls the
// driver's NodePublishVolume with the volume context, secrets and target path
// kubelet would send (D/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount).
// Calling it again on a mounted volume is kubelet's periodic republish
// (CSIDriver requiresRepublish).
//
// unpublish calls NodeUnpublishVolume for that target path, as kubelet does
// when the pod goes away.
//
// Output, one JSON line: {"ok":true,"targetPath":"…","volumeId":"…"} or
// {"ok":false,"grpcCode":"PermissionDenied","message":"…","targetPath":"…"}.
// The exit status is 0 whenever the CSI call was made (whatever its outcome),
// 1 when the Kubernetes side failed before it, 2 for usage errors.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Volume context keys kubelet adds (pkg/volume/csi/csi_util.go, csi_mounter.go).
const (
	podNameKey        = "csi.storage.k8s.io/pod.name"
	podNamespaceKey   = "csi.storage.k8s.io/pod.namespace"
	podUIDKey         = "csi.storage.k8s.io/pod.uid"
	serviceAccountKey = "csi.storage.k8s.io/serviceAccount.name"
	ephemeralKey      = "csi.storage.k8s.io/ephemeral"
	tokensKey         = "csi.storage.k8s.io/serviceAccount.tokens"
)

type options struct {
	kubeconfig string
	endpoint   string
	podsDir    string
	namespace  string
	pod        string
	volume     string
	timeout    time.Duration
}

type result struct {
	OK         bool   `json:"ok"`
	GRPCCode   string `json:"grpcCode,omitempty"`
	Message    string `json:"message,omitempty"`
	TargetPath string `json:"targetPath,omitempty"`
	VolumeID   string `json:"volumeId,omitempty"`
}

func main() {
	if len(os.Args) < 2 {
		usage("missing subcommand")
	}
	command := os.Args[1]
	fs := flag.NewFlagSet(command, flag.ExitOnError)
	var o options
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig with kubelet's permissions")
	fs.StringVar(&o.endpoint, "endpoint", "", "the driver's CSI endpoint, unix:///path/csi.sock")
	fs.StringVar(&o.podsDir, "pods-dir", "", "kubelet's root directory (target paths are under DIR/pods/)")
	fs.StringVar(&o.namespace, "namespace", "", "pod namespace")
	fs.StringVar(&o.pod, "pod", "", "pod name")
	fs.StringVar(&o.volume, "volume", "", "name of the pod's CSI volume")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "deadline for the whole operation (kubelet's csiTimeout is 2m)")
	_ = fs.Parse(os.Args[2:])
	if o.kubeconfig == "" || o.endpoint == "" || o.podsDir == "" || o.namespace == "" || o.pod == "" || o.volume == "" {
		usage("--kubeconfig, --endpoint, --pods-dir, --namespace, --pod and --volume are required")
	}

	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	var (
		res result
		err error
	)
	switch command {
	case "publish":
		res, err = publish(ctx, o)
	case "unpublish":
		res, err = unpublish(ctx, o)
	default:
		usage("unknown subcommand " + command)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubelet-sim:", err)
		os.Exit(1)
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}

func usage(msg string) {
	fmt.Fprintf(os.Stderr, "kubelet-sim: %s\nusage: kubelet-sim publish|unpublish --kubeconfig F --endpoint unix:///…/csi.sock --pods-dir D --namespace NS --pod P --volume V [--timeout 2m]\n", msg)
	os.Exit(2)
}

// podVolume is what kubelet knows about one CSI inline volume of a pod.
type podVolume struct {
	pod        *corev1.Pod
	source     *corev1.CSIVolumeSource
	volumeID   string
	targetPath string
}

func lookup(ctx context.Context, client kubernetes.Interface, o options) (*podVolume, error) {
	pod, err := client.CoreV1().Pods(o.namespace).Get(ctx, o.pod, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get pod: %w", err)
	}
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		if v.Name != o.volume {
			continue
		}
		if v.CSI == nil {
			return nil, fmt.Errorf("volume %q of pod %s/%s is not a CSI inline volume", o.volume, o.namespace, o.pod)
		}
		return &podVolume{
			pod:    pod,
			source: v.CSI,
			// makeVolumeHandle in csi_mounter.go.
			volumeID:   fmt.Sprintf("csi-%x", sha256.Sum256([]byte(string(pod.UID)+v.Name))),
			targetPath: filepath.Join(o.podsDir, "pods", string(pod.UID), "volumes", "kubernetes.io~csi", v.Name, "mount"),
		}, nil
	}
	return nil, fmt.Errorf("pod %s/%s has no volume %q", o.namespace, o.pod, o.volume)
}

func publish(ctx context.Context, o options) (result, error) {
	client, err := kubeClient(o.kubeconfig)
	if err != nil {
		return result{}, err
	}
	pv, err := lookup(ctx, client, o)
	if err != nil {
		return result{}, err
	}
	pod := pv.pod

	var driver *storagev1.CSIDriver
	driver, err = client.StorageV1().CSIDrivers().Get(ctx, pv.source.Driver, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		driver, err = nil, nil // kubelet then sends neither pod info nor tokens
	}
	if err != nil {
		return result{}, fmt.Errorf("get CSIDriver %s: %w", pv.source.Driver, err)
	}

	volumeContext := map[string]string{}
	for k, v := range pv.source.VolumeAttributes {
		volumeContext[k] = v
	}
	if driver != nil && driver.Spec.PodInfoOnMount != nil && *driver.Spec.PodInfoOnMount {
		volumeContext[podNameKey] = pod.Name
		volumeContext[podNamespaceKey] = pod.Namespace
		volumeContext[podUIDKey] = string(pod.UID)
		volumeContext[serviceAccountKey] = pod.Spec.ServiceAccountName
		volumeContext[ephemeralKey] = strconv.FormatBool(true)
	}

	secrets := map[string]string{}
	if ref := pv.source.NodePublishSecretRef; ref != nil {
		secret, err := client.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return result{}, fmt.Errorf("fetching NodePublishSecretRef %s/%s failed: %w", pod.Namespace, ref.Name, err)
		}
		for k, v := range secret.Data {
			secrets[k] = string(v)
		}
	}

	if driver != nil && len(driver.Spec.TokenRequests) > 0 {
		tokens := map[string]authenticationv1.TokenRequestStatus{}
		for _, tr := range driver.Spec.TokenRequests {
			audiences := []string{tr.Audience}
			if tr.Audience == "" {
				audiences = []string{}
			}
			resp, err := client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, &authenticationv1.TokenRequest{
				Spec: authenticationv1.TokenRequestSpec{
					Audiences:         audiences,
					ExpirationSeconds: tr.ExpirationSeconds,
					BoundObjectRef: &authenticationv1.BoundObjectReference{
						APIVersion: "v1",
						Kind:       "Pod",
						Name:       pod.Name,
						UID:        pod.UID,
					},
				},
			}, metav1.CreateOptions{})
			if err != nil {
				return result{}, fmt.Errorf("TokenRequest for service account %s/%s: %w", pod.Namespace, pod.Spec.ServiceAccountName, err)
			}
			tokens[tr.Audience] = resp.Status
		}
		encoded, err := json.Marshal(tokens)
		if err != nil {
			return result{}, err
		}
		if driver.Spec.ServiceAccountTokenInSecrets != nil && *driver.Spec.ServiceAccountTokenInSecrets {
			secrets[tokensKey] = string(encoded)
		} else {
			volumeContext[tokensKey] = string(encoded)
		}
	}

	fsType := ""
	if pv.source.FSType != nil {
		fsType = *pv.source.FSType
	}
	readOnly := pv.source.ReadOnly != nil && *pv.source.ReadOnly

	// kubelet creates the parent of the target path; the driver creates the target.
	if err := os.MkdirAll(filepath.Dir(pv.targetPath), 0o750); err != nil {
		return result{}, err
	}

	conn, err := grpc.NewClient(o.endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return result{}, fmt.Errorf("dial %s: %w", o.endpoint, err)
	}
	defer conn.Close()
	_, err = csi.NewNodeClient(conn).NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
		VolumeId:      pv.volumeID,
		TargetPath:    pv.targetPath,
		Readonly:      readOnly,
		VolumeContext: volumeContext,
		Secrets:       secrets,
		VolumeCapability: &csi.VolumeCapability{
			// ReadWriteOnce for a driver without SINGLE_NODE_MULTI_WRITER.
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType}},
		},
	})
	return outcome(err, pv), nil
}

func unpublish(ctx context.Context, o options) (result, error) {
	client, err := kubeClient(o.kubeconfig)
	if err != nil {
		return result{}, err
	}
	pv, err := lookup(ctx, client, o)
	if err != nil {
		return result{}, err
	}
	conn, err := grpc.NewClient(o.endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return result{}, fmt.Errorf("dial %s: %w", o.endpoint, err)
	}
	defer conn.Close()
	_, err = csi.NewNodeClient(conn).NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{
		VolumeId:   pv.volumeID,
		TargetPath: pv.targetPath,
	})
	return outcome(err, pv), nil
}

func outcome(err error, pv *podVolume) result {
	res := result{OK: err == nil, TargetPath: pv.targetPath, VolumeID: pv.volumeID}
	if err != nil {
		// A non-status error (e.g. the deadline) becomes Unknown with its text.
		st, _ := status.FromError(err)
		res.GRPCCode = st.Code().String()
		res.Message = st.Message()
	}
	return res
}

func kubeClient(kubeconfig string) (kubernetes.Interface, error) {
	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	config.UserAgent = "kubelet-sim"
	return kubernetes.NewForConfig(config)
}
